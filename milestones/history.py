"""`python -m milestones compare --history`: the course as one picture.

For each milestone, its paper configuration's parameters and training compute against the year (log scale),
beside our own runs'. Parameters and forward multiply-adds are counted on the models this repository builds
(on the meta device for the big ones: no memory, no arithmetic); what the paper trained on is an assumption,
one per row of PAPERS, with its source. Training compute = 3 (forward + backward) x 2 (FLOPs per
multiply-add) x forward MACs per example x examples seen.
"""

import importlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.errors import UserError


def _model(mid: str, name: str = "model"):
    return importlib.import_module(f"milestones.{mid}.{name}")


def _images(c: int, side: int):
    return lambda: (torch.randn(1, c, side, side),)


def _text(vocab: int, t: int):
    return lambda: (torch.randint(1, vocab, (1, t)),)


@dataclass
class Paper:
    milestone: str
    year: int
    label: str
    build: Callable  # () -> the paper's network
    inputs: Callable  # () -> one example's inputs
    seen: float  # examples (tokens for language models) the paper's recipe trains on
    source: str  # where `seen` comes from
    units: int = 1  # examples in one input (tokens of a sequence): MACs per example = count / units
    meta: bool = True  # built on the meta device (the small ones, whose init reads values, on the CPU)


PTB_TRAIN_TOKENS = 929_589  # Mikolov's PTB training split with end-of-sentence tokens
WMT_BATCH = 25_000  # target tokens per Transformer batch (Vaswani et al. 2017, sec. 5.1)

PAPERS = [
    Paper("01_dnn", 1986, "6-2-1 symmetry net", lambda: _model("01_dnn").MLP([6, 2, 1]), lambda: (torch.randn(1, 6),),
          1_425 * 64, "Rumelhart, Hinton & Williams 1986: 1,425 sweeps through the 64 patterns", meta=False),
    Paper("01_dnn", 2003, "MLP 784-800-10", lambda: _model("01_dnn").MLP([784, 800, 10], "relu"),
          lambda: (torch.randn(1, 784),), 60 * 60_000,
          "Simard et al. 2003 give no schedule: 60 epochs of 60,000 digits assumed (01's mnist/paper preset)",
          meta=False),
    Paper("02_cnn_lenet", 1998, "LeNet-5", lambda: _model("02_cnn_lenet").LeNet5(), _images(1, 32), 20 * 60_000,
          "LeCun et al. 1998, sec. III: 20 passes through the 60,000 training digits", meta=False),
    Paper("03_alexnet", 2012, "AlexNet", lambda: _model("03_alexnet").alexnet(), _images(3, 227), 90 * 1.2e6,
          "Krizhevsky et al. 2012, sec. 5: roughly 90 cycles through 1.2 million images"),
    Paper("04_resnet", 2015, "ResNet-20 (CIFAR)", lambda: _model("04_resnet").resnet_cifar(20), _images(3, 32),
          64_000 * 128, "He et al. 2015, sec. 4.2: mini-batch 128, 64k iterations"),
    Paper("04_resnet", 2015, "ResNet-152", lambda: _model("04_resnet").resnet_imagenet(152), _images(3, 224),
          600_000 * 256, "He et al. 2015, sec. 3.4: mini-batch 256, up to 60x10^4 iterations"),
    Paper("05_lstm", 2014, "LSTM LM 2x1500 (Zaremba large)",
          lambda: _model("05_lstm").LanguageModel(10_000, 1500, 2, impl="scratch"), _text(10_000, 35),
          55 * PTB_TRAIN_TOKENS, "Zaremba et al. 2014, sec. 4.1: 55 epochs of PTB's 929k training tokens", units=35),
    Paper("06_transformer", 2017, "Transformer base",
          lambda: _model("06_transformer").Transformer(37_000, 512, 6, 8, 2048, impl="scratch"),
          lambda: (torch.randint(1, 37_000, (1, 25)), torch.randint(1, 37_000, (1, 25))), 100_000 * WMT_BATCH,
          "Vaswani et al. 2017, sec. 5: 100k steps of ~25k target tokens (their Table 2, from GPU time: 3.3e18 FLOPs)",
          units=25),
    Paper("06_transformer", 2017, "Transformer big",
          lambda: _model("06_transformer").Transformer(37_000, 1024, 6, 16, 4096, impl="scratch"),
          lambda: (torch.randint(1, 37_000, (1, 25)), torch.randint(1, 37_000, (1, 25))), 300_000 * WMT_BATCH,
          "Vaswani et al. 2017, sec. 5: 300k steps of ~25k target tokens (their Table 2: 2.3e19 FLOPs)", units=25),
    Paper("07_vae_gan_diffusion", 2020, "DDPM U-Net (CIFAR-10)", lambda: _model("07_vae_gan_diffusion", "unet").UNet(),
          lambda: (torch.randn(1, 3, 32, 32), torch.randint(1, 1000, (1,))), 800_000 * 128,
          "Ho et al. 2020, appendix B: 800k steps of batch 128"),
]


def count(build: Callable, inputs: Callable, meta: bool = True) -> tuple[int, int]:
    """(parameters, forward multiply-adds) of one forward pass; the tied embeddings of 06 counted once."""
    with torch.device("meta" if meta else "cpu"):
        net, args = build(), inputs()
        params = sum(p.numel() for p in net.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net.eval()(*args)
    return params, counter.get_total_flops() // 2


def paper_points() -> list[dict]:
    """{milestone, year, label, params, macs, flops} per row of PAPERS whose model can be built here."""
    from .bench import one_line, warn

    points = []
    for p in PAPERS:
        try:
            params, macs = count(p.build, p.inputs, p.meta)
        except Exception as e:  # a milestone being edited: the others are still drawn
            warn(f"history: skipping {p.label} ({p.milestone}): {one_line(e)}")
            continue
        per_example = macs / p.units
        points.append(dict(milestone=p.milestone, year=p.year, label=p.label, params=params, macs=per_example,
                           flops=3 * 2 * per_example * p.seen))
    return points


# ---- our runs -----------------------------------------------------------------------------------------

def _config(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "config.json").read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def run_flops(card: dict, config: dict, cases: dict) -> float | None:
    """Training FLOPs of one run: steps x examples per step x the forward MACs of its model x 6. The MACs come
    from the card (`macs_per_example`, or 04's `model_tflops`) or from the bench model with the same parameter
    count; None when neither is known."""
    steps, params = card.get("steps"), card.get("params")
    if not steps:
        return None
    macs, tokens = card.get("macs_per_example"), 0
    if not macs and card.get("model_tflops") and card.get("examples_per_second"):
        macs = card["model_tflops"] * 1e12 / (6 * card["examples_per_second"])
    if not macs and params in cases:
        macs, tokens = cases[params].macs, cases[params].tokens
    if not macs:
        return None
    if tokens:  # a language model: MACs per token, times the tokens of each step
        per_step = config.get("batch_tokens") or config.get("batch_size", 0) * (config.get("bptt") or
                                                                               config.get("context") or 0)
        return 6 * macs / tokens * steps * per_step or None
    return 6 * macs * steps * config.get("batch_size", 0) or None


def run_points(runs: str, papers: list[dict]) -> list[dict]:
    """{label, year, params, flops} per finished run under `runs` (the latest of each milestone/model), placed
    beside the paper point of its milestone with the nearest parameter count."""
    from .compare import load_summaries

    try:
        cards = load_summaries(runs)
    except UserError:  # no runs directory: the papers alone
        return []
    latest = {}
    for card in cards:
        if isinstance(card.get("params"), (int, float)) and card["params"] > 0 and card.get("milestone"):
            latest[(card["milestone"], card.get("model"))] = card  # sorted by run: the last is the newest
    if not latest:
        return []
    from .bench import build_cases, count_macs

    cases = {}
    for case in build_cases(sorted({m for m, _ in latest})):
        try:
            case.macs = count_macs(case)
            cases[sum(p.numel() for p in case.net.parameters() if p.requires_grad)] = case
        except Exception:  # an unmeasurable bench model only leaves its runs without a compute point
            pass
    points = []
    for (mid, model), card in latest.items():
        near = [p for p in papers if p["milestone"] == mid]
        year = min(near, key=lambda p: abs(math.log(card["params"] / p["params"])))["year"] if near else _year(mid)
        flops = run_flops(card, _config(Path(runs) / card["run"]), cases)
        points.append(dict(label=str(model), year=year + 0.4, params=card["params"], flops=flops))
    return points


def _year(mid: str) -> int:
    from . import meta
    return int(meta(mid)["year"])


def draw_history(runs: str = "runs", out=None, papers: list[dict] | None = None) -> Path:
    """compare --history: the PNG (default RUNS/compare-history.png); returns its path. `papers`: paper_points(),
    if already computed."""
    from common.plot import labelled_scatter

    papers = paper_points() if papers is None else papers
    if not papers:
        raise UserError("no paper configuration could be built (are the milestones' model modules there?)")
    ours = run_points(runs, papers)
    unmeasured = sum(1 for r in ours if r["flops"] is None)
    ours_name = f"our runs ({len(ours)})"
    compute_name = ours_name + (f"; {unmeasured} without known MACs not shown" if unmeasured else "")
    panels = [
        ("parameters", {"papers": [(p["year"], p["params"], p["label"]) for p in papers],
                        ours_name: [(r["year"], r["params"], r["label"]) for r in ours]}),
        ("training FLOPs (6 x MACs/example x examples seen)",
         {"papers": [(p["year"], p["flops"], p["label"]) for p in papers],
          compute_name: [(r["year"], r["flops"], r["label"]) for r in ours if r["flops"] is not None]}),
    ]
    out = Path(out) if out else Path(runs) / "compare-history.png"
    path = labelled_scatter(panels, out, title="The course: each paper's model by year, beside our runs",
                            xlabel="year")
    if ours and not any(r["flops"] for r in ours):
        print("note: none of the runs' models has known MACs, so none is on the compute panel", file=sys.stderr)
    return path
