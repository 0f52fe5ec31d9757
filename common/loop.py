"""What every explicit training loop calls besides the session: the optimizer step (with loss scaling and
clipping), the evaluators for classifiers and language models, and the one-cycle learning-rate shape of the
fast presets."""

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_classifier(model, loader, rt, prepare) -> dict:
    """{"loss": mean cross-entropy, "error": error rate} over a loader, summed across ranks.

    `prepare(x)` turns a stored batch into model input (e.g. uint8 -> float on the device). When it returns
    several views of each example, shaped (K, B, ...) (e.g. AlexNet's ten test patches), the prediction is
    the softmax averaged over the K views and the loss is its negative log-likelihood."""
    model.eval()
    totals = torch.zeros(3, device=rt.device)  # loss sum, wrong, count
    for x, y in loader:
        x, y = prepare(x), y.to(rt.device, non_blocking=True)
        views = x.dim() == 5 and x.shape[1] == y.shape[0]  # (K, B, C, H, W)
        with rt.autocast():
            logits = model(x.flatten(0, 1) if views else x).float()
        if views:
            p = logits.softmax(-1).unflatten(0, x.shape[:2]).mean(0)  # (B, classes)
            totals[0] += F.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum")
            totals[1] += (p.argmax(-1) != y).sum()
        else:
            totals[0] += F.cross_entropy(logits, y, reduction="sum")
            totals[1] += (logits.argmax(-1) != y).sum()
        totals[2] += y.numel()
    rt.all_reduce_sum(totals)
    model.train()
    loss, wrong, n = totals.tolist()
    return {"loss": loss / max(n, 1), "error": wrong / max(n, 1)}


@torch.no_grad()
def evaluate_lm(model, loader, rt) -> float:
    """Mean negative log-likelihood per token (nats) over a split of (x, y) windows, summed across ranks.
    A recurrent model (`model(x, state) -> (logits, state)`) carries its state across the windows; a model
    that returns logits alone sees each window on its own. Perplexity is exp of this mean."""
    model.eval()
    totals = torch.zeros(2, device=rt.device, dtype=torch.float64)  # NLL sum, tokens
    state = None
    for x, y in loader:
        with rt.autocast():
            out = model(x, state) if state is not None else model(x)
        logits, state = out if isinstance(out, tuple) else (out, None)
        totals[0] += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
        totals[1] += y.numel()
    rt.all_reduce_sum(totals)
    model.train()
    return float(totals[0] / totals[1])


def optimizer_step(loss, opt, scaler, clip: float = 0.0, params=None) -> None:
    """One update, precision-safe: backward through the (fp16-only) loss scaler, optional gradient-norm
    clipping on the true (unscaled) gradients, the optimizer step, and the scaler's update."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, clip)
    scaler.step(opt)
    scaler.update()


def one_cycle(total: int):
    """The one-cycle rate (Smith & Topin 2017) as a factor on the peak LR at step s: linear from 1/25 to 1 over
    the first quarter of `total` steps, then a cosine down to 0 at the last step (02's and 04's `fast` races)."""
    up = max(1, total // 4)

    def factor(s: int) -> float:
        if s < up:
            return (1 + 24 * s / up) / 25
        return 0.5 * (1 + math.cos(math.pi * min(s - up, total - up) / max(1, total - up)))
    return factor
