"""`python -m milestones bench`: how fast each milestone's main model trains on this machine.

For every milestone one small function below builds its main model (from the milestone's own model module)
and a synthetic batch: this measures compute, not learning. Per model and precision it reports

    params            trainable parameters
    MACs/example      forward multiply-adds of one example (FlopCounterMode's FLOPs / 2)
    examples/s        training examples per second over --steps timed steps (forward, loss, backward,
                      optimizer step) after 2 warm-up steps; tokens/s for language models
    achieved GFLOP/s  3 x 2 x MACs/example x examples/s (backward ~ twice the forward)
    % of peak         achieved / the device's peak: the datasheet's on a known CUDA GPU (halved for fp32, as
                      common.device.mfu does), else measured here with a matmul probe

A milestone that is missing or only half-built is skipped with one line on stderr.
"""

import contextlib
import csv
import importlib
import io
import os
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from common.device import PEAK_FLOPS, check_precision, count_params, pick_device, resolve_precision
from common.errors import UserError

from . import COURSE, chapter_of, is_built
from .compare import format_table

WARMUP = 2  # untimed steps before the timed ones (allocations, kernel selection)
PROBE_N, PROBE_SECONDS = 2048, 0.5  # the CPU peak probe: n x n matmuls for about this long per precision
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Case:
    """One model to time: `loss(net, batch(B))` is a training step's scalar; `twin` computes the same function
    with explicit matmuls where `net` runs fused kernels that FlopCounterMode cannot see (nn.LSTM, SDPA on CPU)."""
    milestone: str
    model: str
    net: nn.Module
    batch: Callable[[int], tuple]
    loss: Callable[[nn.Module, tuple], torch.Tensor]
    batch_size: int  # the recipe's batch (on an accelerator)
    cpu_batch_size: int = 0  # a smaller one on a CPU, so that the whole course times in about a minute (0: the same)
    tokens: int = 0  # tokens per example, for language models
    twin: nn.Module | None = None
    macs: int = field(default=0, init=False)  # forward multiply-adds per example, filled in by count_macs


def _module(mid: str, name: str):
    return importlib.import_module(f"milestones.{mid}.{name}")


def _images(c: int, side: int, classes: int = 10):
    return lambda b: (torch.randn(b, c, side, side), torch.randint(0, classes, (b,)))


def _tokens(vocab: int, t: int):
    return lambda b: (torch.randint(0, vocab, (b, t)), torch.randint(0, vocab, (b, t)))


def _classify(criterion=None):
    criterion = criterion or (lambda out, y: F.cross_entropy(out.float(), y))
    return lambda net, batch: criterion(net(batch[0]), batch[1])


def _next_token(net, batch):
    logits = net(batch[0])
    logits = logits[0] if isinstance(logits, tuple) else logits  # the LSTM LM also returns its state
    return F.cross_entropy(logits.float().flatten(0, 1), batch[1].flatten())


# ---- one function per milestone: its main model, a batch, the loss --------------------------------------

def cases_01() -> list[Case]:
    m = _module("01_dnn", "model")
    net = m.MLP([784, 800, 10], "relu")  # Simard et al. 2003's MLP, 01's mnist experiment
    return [Case("01_dnn", "MLP 784-800-10", net, _images(1, 28), _classify(m.cross_entropy), 128)]


def cases_02() -> list[Case]:
    m = _module("02_cnn_lenet", "model")
    net = m.LeNet5()  # faithful: scaled tanh, trainable subsampling, Table I's C3, RBF outputs, eq. 9 loss
    return [Case("02_cnn_lenet", "LeNet-5 (faithful)", net, _images(1, 32), _classify(m.map_loss), 32)]


def cases_03() -> list[Case]:
    recipe = _module("03_alexnet", "recipe")
    quick = dict(experiment="cifar", width=0.5, channels="", groups=2, activation="relu", lrn=True, overlap=True,
                 dropout=0.5, init="modern")  # train.py's cifar/quick preset: width 0.5
    net = recipe.build_model(SimpleNamespace(**quick), 10)
    return [Case("03_alexnet", "AlexNet CIFAR w0.5", net, _images(3, 32), _classify(), 128, 32)]


def cases_04() -> list[Case]:
    m = _module("04_resnet", "model")
    return [Case("04_resnet", "ResNet-20", m.resnet_cifar(20), _images(3, 32), _classify(), 128, 32)]


def cases_05() -> list[Case]:
    m = _module("05_lstm", "model")
    small = dict(vocab_size=10000, hidden_size=200, num_layers=2)  # Zaremba et al.'s small model on PTB
    return [Case("05_lstm", "LSTM LM 2x200 (Zaremba small)", m.LanguageModel(**small), _tokens(10000, 20),
                 _next_token, 20, tokens=20, twin=m.LanguageModel(**small, impl="scratch"))]


def cases_06() -> list[Case]:
    cases = []
    with contextlib.suppress(ModuleNotFoundError):  # a half-built milestone may lack one of the two
        m = _module("06_transformer", "model")
        quick = dict(vocab_size=4000, d_model=128, n_layers=2, h=4, d_ff=512, dropout=0.1)  # translate/quick
        src_tgt = lambda b: (torch.randint(1, 4000, (b, 24)), torch.randint(1, 4000, (b, 25)))  # 24 tokens each
        seq2seq = lambda net, batch: F.cross_entropy(net(batch[0], batch[1][:, :-1]).float().flatten(0, 1),
                                                     batch[1][:, 1:].flatten())
        cases.append(Case("06_transformer", "Transformer 2+2x128 (quick)", m.Transformer(**quick), src_tgt,
                          seq2seq, 64, 8, tokens=24, twin=m.Transformer(**quick, impl="scratch")))
    with contextlib.suppress(ModuleNotFoundError):
        g = _module("06_transformer", "gpt")
        baby = dict(vocab_size=65, context=64, n_layer=2, n_head=4, d_model=128, dropout=0.0)  # charlm/quick
        cases.append(Case("06_transformer", "GPT 2x128 char (quick)", g.GPT(**baby), _tokens(65, 64), _next_token,
                          64, 16, tokens=64, twin=g.GPT(**baby, impl="scratch")))
    if not cases:
        raise ModuleNotFoundError("neither model.py nor gpt.py is there yet")
    return cases


def cases_07() -> list[Case]:
    cases = []
    with contextlib.suppress(ModuleNotFoundError):
        unet, diffusion = _module("07_vae_gan_diffusion", "unet"), _module("07_vae_gan_diffusion", "diffusion")
        net = unet.UNet(1, 16, (1, 2, 2), 1, (), 0.0, 28)  # train.py's ddpm/quick on MNIST
        ddpm = diffusion.Diffusion(200, 1e-4 * 5, 0.02 * 5)  # T = 200, the linear schedule stretched
        cases.append(Case("07_vae_gan_diffusion", "DDPM U-Net ch16 MNIST", net, lambda b: (torch.randn(b, 1, 28, 28),),
                          lambda net, batch: ddpm.loss(net, batch[0]), 64, 16))
    with contextlib.suppress(ModuleNotFoundError):
        gan = _module("07_vae_gan_diffusion", "gan")
        nets = nn.ModuleDict(dict(G=gan.DCGenerator(100, 28, 1, 32), D=gan.DCDiscriminator(28, 1, 32)))  # dcgan/quick

        def gan_step(nets, batch):  # D on real and fake, G through D: one backward for both (compute, not learning)
            x, z = batch
            fake = nets["G"](z)
            d_loss = gan.discriminator_loss(nets["D"](x), nets["D"](fake.detach()))
            return d_loss + gan.generator_loss(nets["D"](fake))
        cases.append(Case("07_vae_gan_diffusion", "DCGAN G+D w32 MNIST", nets,
                          lambda b: (torch.randn(b, 1, 28, 28), torch.rand(b, 100) * 2 - 1), gan_step, 128, 32))
    if not cases:
        raise ModuleNotFoundError("neither unet.py/diffusion.py nor gan.py is there yet")
    return cases


CASES = {"01_dnn": cases_01, "02_cnn_lenet": cases_02, "03_alexnet": cases_03, "04_resnet": cases_04,
         "05_lstm": cases_05, "06_transformer": cases_06, "07_vae_gan_diffusion": cases_07}


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def resolve(ids) -> list[str]:
    """Milestone ids as `train` takes them (01_dnn, 01, dnn or a model's name), in course order; every one by
    default."""
    chosen = {chapter_of(mid) for mid in ids}
    return [m for m in COURSE if not ids or m in chosen]


def build_cases(mids) -> list[Case]:
    """The cases of every milestone that can be built; the others are skipped with a warning."""
    cases = []
    for mid in mids:
        if not is_built(mid):
            warn(f"skipping {mid}: not built yet (no train.py)")
            continue
        try:
            cases += CASES[mid]()
        except Exception as e:  # a half-built milestone must not stop the others
            warn(f"skipping {mid}: {one_line(e)}")
    return cases


# ---- counting and timing -----------------------------------------------------------------------------

def count_macs(case: Case) -> int:
    """Forward multiply-adds of one example, counted on the CPU in fp32 (FlopCounterMode's FLOPs / 2)."""
    net = case.twin if case.twin is not None else case.net
    was = net.training
    net.train()  # the training step's forward (dropout adds no matmuls)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            case.loss(net, case.batch(1))
    finally:
        net.train(was)
    return counter.get_total_flops() // 2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def examples_per_second(case: Case, device: torch.device, precision: str, steps: int, batch_size: int) -> float:
    """Training examples per second over `steps` timed steps, after WARMUP untimed ones, on one fixed batch."""
    net = case.net.to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    batch = tuple(t.to(device) for t in case.batch(batch_size))
    for i in range(WARMUP + steps):
        if i == WARMUP:
            synchronize(device)
            start = time.perf_counter()
        with autocast(device, precision):
            loss = case.loss(net, batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def probe_size(device: torch.device, precision: str, n: int = PROBE_N, seconds: float = PROBE_SECONDS) -> int:
    """The matmul side for the peak probe: PROBE_N, or smaller where one such matmul would take more than a tenth
    of the probe's time (bf16 emulated on an AVX2 CPU: one 2048x2048 product took 57 s there)."""
    side = 256
    while side < n:
        a = torch.randn(side, side, device=device, dtype=DTYPES[precision])
        synchronize(device)
        t0 = time.perf_counter()
        a @ a
        synchronize(device)
        if (time.perf_counter() - t0) * 8 > seconds / 10:  # the next size up (8x the work) would be too slow
            break
        side *= 2
    return side


def matmul_flops(device: torch.device, precision: str, n: int = PROBE_N, seconds: float = PROBE_SECONDS) -> float:
    """FLOP/s of the fastest of n x n matmuls in the precision's dtype, run for about `seconds` (at least 3):
    on a shared machine the fastest one is the nearest to what the hardware can do. On a CPU, n shrinks where
    the precision is slow there (probe_size), so the probe never hangs."""
    if device.type == "cpu":
        n = probe_size(device, precision, n, seconds)
    a, b = (torch.randn(n, n, device=device, dtype=DTYPES[precision]) for _ in range(2))
    a @ b  # warm-up
    synchronize(device)
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times)


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from): the datasheet's for a known CUDA GPU, else measured here."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        if peak is not None:
            return (peak / 2 if precision == "fp32" else peak), f"{name} datasheet"
    return matmul_flops(device, precision), "measured here, the fastest of square matmuls"


def bench(ids=(), precisions=("fp32", "bf16"), steps: int = 10, batch_size: int = 0, device: str = "auto",
          progress: bool = False, threads: int = 0) -> tuple[list[dict], dict]:
    """(one row per model and precision, {precision: (peak FLOP/s, source)}). threads: CPU threads (0: torch's)."""
    if threads < 0:
        raise UserError(f"--threads must be 0 (torch's default) or more, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    if batch_size < 0:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    dev = pick_device(device)
    for p in precisions:
        check_precision(p, dev)
    precisions = tuple(dict.fromkeys(resolve_precision(p, dev) for p in precisions))  # auto: what it means here
    cases = build_cases(resolve(ids))
    peaks = {p: peak_flops(dev, p) for p in precisions} if cases else {}
    rows = []
    for case in cases:
        b = batch_size or (case.cpu_batch_size if dev.type == "cpu" and case.cpu_batch_size else case.batch_size)
        try:
            case.macs = count_macs(case)
            for p in precisions:
                rate = examples_per_second(case, dev, p, steps, b)
                if progress:
                    print(f"bench: {case.milestone} {case.model} {p}: {rate:,.1f} examples/s", file=sys.stderr)
                achieved = 3 * 2 * case.macs * rate
                rows.append(dict(milestone=case.milestone, model=case.model, batch=b, params=count_params(case.net),
                                 macs_per_example=case.macs, precision=p, examples_per_second=rate,
                                 tokens_per_second=rate * case.tokens if case.tokens else None,
                                 achieved_flops=achieved, peak_fraction=achieved / peaks[p][0]))
        except Exception as e:  # one model failing (a milestone mid-edit) leaves the others' numbers
            warn(f"skipping {case.milestone} {case.model}: {one_line(e)}")
        case.net.to("cpu")
    return rows, peaks


# ---- the table ----------------------------------------------------------------------------------------

COLUMNS = [("milestone", "milestone"), ("model", "model"), ("batch", "batch"), ("params", "params"),
           ("macs_per_example", "MACs/example"), ("precision", "precision"),
           ("examples_per_second", "examples/s"), ("tokens_per_second", "tokens/s"),
           ("achieved_flops", "achieved GFLOP/s"), ("peak_fraction", "% of peak")]


def _si(v: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def _cell(key: str, v) -> str:
    if v is None:
        return "-"
    if key in ("params", "macs_per_example"):
        return _si(v)
    if key in ("examples_per_second", "tokens_per_second"):
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    if key == "achieved_flops":
        return f"{v / 1e9:.2f}"
    if key == "peak_fraction":
        return f"{100 * v:.1f}%"
    return str(v)


def footer(peaks: dict, device: str) -> list[str]:
    lines = [f"peak {p} {v / 1e9:,.1f} GFLOP/s ({src})" for p, (v, src) in peaks.items()]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines.append(f"device {device}, threads {torch.get_num_threads()}, load average {load}; "
                 f"examples/s after {WARMUP} warm-up steps; achieved = 3 x 2 x MACs/example x examples/s")
    return lines


def format_bench(rows: list[dict], peaks: dict, fmt: str = "table", device: str = "cpu") -> str:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([k for k, _ in COLUMNS] + ["peak_flops", "peak_source"])
        for r in rows:
            w.writerow([r[k] if r[k] is not None else "" for k, _ in COLUMNS] + list(peaks[r["precision"]]))
        return buf.getvalue().rstrip("\n")
    header = [title for _, title in COLUMNS]
    cells = [[_cell(k, r[k]) for k, _ in COLUMNS] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines + [""] + footer(peaks, device))
    return "\n".join([format_table(header, cells)] + footer(peaks, device))


def main(args) -> None:
    """The `bench` subcommand: args from milestones/__main__.py."""
    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
    if not precisions:
        raise UserError("--precision takes a comma-separated list, e.g. fp32,bf16")
    rows, peaks = bench(args.ids, precisions, args.steps, args.batch_size, args.device,
                        progress=True, threads=args.threads)
    if not rows:
        raise UserError("nothing to bench: no chosen milestone could be built")
    print(format_bench(rows, peaks, args.format, str(pick_device(args.device))))
