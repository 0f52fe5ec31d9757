"""The character-level GPT's recipe pieces, shared by train.py's charlm and vs_lstm.py: the model from a config,
the batches (random windows, seeded by the step), the validation windows, the learning-rate schedule and AdamW."""

import math

import torch

from .gpt import GPT


def gpt_from(cfg: dict, vocab_size: int) -> GPT:
    return GPT(vocab_size, cfg["context"], cfg["layers"], cfg["heads"], cfg["d_model"], cfg["dropout"],
               cfg["bias"], cfg["impl"])


def windows(ids: torch.Tensor, batch: int, context: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` random windows of context + 1 tokens, drawn from `seed` alone: x, y (B, T), y = x shifted by one."""
    g = torch.Generator().manual_seed(seed)  # on the CPU: the same batches on every device
    start = torch.randint(len(ids) - context, (batch,), generator=g)
    if ids.device.type == "cuda":  # a pinned copy runs behind the GPU's queue instead of waiting for it
        start = start.pin_memory().to(ids.device, non_blocking=True)
    else:
        start = start.to(ids.device)
    w = ids[start[:, None] + torch.arange(context + 1, device=ids.device)]  # (B, T + 1)
    return w[:, :-1], w[:, 1:]


def tiled(ids: torch.Tensor, context: int, batch: int, rt) -> list:
    """The whole split as non-overlapping windows (this rank's share), in batches of (x, y) (B, T)."""
    n = (len(ids) - 1) // context
    x = ids[:n * context].view(n, context)[rt.rank::rt.world_size]
    y = ids[1:n * context + 1].view(n, context)[rt.rank::rt.world_size]
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]


def lr_factor(cfg, s: int, done: float) -> float:
    """The factor on the peak rate at step s: a linear warm-up over cfg.warmup steps, then constant, or a cosine
    down to a tenth of the peak as `done` (the share of the schedule after the warm-up spent) goes 0 -> 1."""
    if s < cfg.warmup:
        return (s + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    q = min(1.0, done)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q))


def lr_lambda(cfg, total: int):
    """Linear warm-up to the peak, then constant or a cosine down to a tenth of it at the last step."""
    return lambda s: lr_factor(cfg, s, (s - cfg.warmup) / max(1, total - cfg.warmup))


def make_adamw(model, cfg, device):
    """AdamW with decay on the matrices and embeddings only (as nanoGPT), fused where PyTorch supports it."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
