"""The paper's figures drawn from our runs.

Figure 1: training error against epochs of the four-layer net (or cuda-convnet's layers-18pct net), ReLU (solid)
against tanh (dashed).
Figure 3: the first layer's kernels as colour images, one block per GPU half. In the paper the 48 kernels on
GPU 1 came out largely colour-agnostic (edges, frequencies) and the 48 on GPU 2 largely colour-specific (blobs
of colour), because conv1's two halves feed separate conv2 groups.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from common.plot import outside_legend, pyplot, redraw_main, save

from .model import first_layer_kernels


def kernel_grid(weight: torch.Tensor, groups: int = 2, per_row: int = 16, scale: int = 0, pad: int = 1) -> torch.Tensor:
    """(C, 3, k, k) kernels -> one (3, H, W) image in [0, 1]: each kernel stretched to its own [0, 1] range,
    nearest-neighbour enlarged, groups stacked as separate blocks with a blank row between them."""
    C, _, k, _ = weight.shape
    scale = scale or max(1, 44 // k)  # every kernel drawn about 44 pixels wide
    w = weight.float()
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)  # (C, 3, k, k) in [0, 1]
    w = F.interpolate(w, scale_factor=scale, mode="nearest")  # (C, 3, ks, ks)
    ks = k * scale
    cell = ks + pad
    blocks = []
    for part in w.chunk(groups):
        rows = -(-part.shape[0] // per_row)
        img = torch.ones(3, rows * cell + pad, per_row * cell + pad)  # white background
        for n, kern in enumerate(part):
            r, c = divmod(n, per_row)
            img[:, pad + r * cell: pad + r * cell + ks, pad + c * cell: pad + c * cell + ks] = kern
        blocks.append(img)
        blocks.append(torch.ones(3, cell // 2, img.shape[2]))  # gap between the GPUs' blocks
    return torch.cat(blocks[:-1], dim=1)


def save_kernel_grid(model, path, groups: int = None) -> Path:
    """Write conv1's kernels of `model` as a PNG (groups defaults to the model's GPU split)."""
    from torchvision.utils import save_image

    groups = groups or getattr(getattr(model, "cfg", None), "groups", 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(kernel_grid(first_layer_kernels(model), groups), str(path))
    return path


def figure_1(results: dict, target: float, path, net: str = "Four-layer CNN", preset: str = "",
             seed: int | None = None) -> Path:
    """Write figure_1_figure(...) as a PNG at `path`."""
    return save(figure_1_figure(results, target, net, preset, seed), path)


def figure_1_figure(results: dict, target: float, net: str = "Four-layer CNN", preset: str = "",
                    seed: int | None = None):
    """results: {activation: {"lr": fastest rate, "rates": {lr: [training error after each epoch]}}}. Every
    (activation, rate) is its own colour, ReLU solid and tanh dashed, each activation's fastest rate bold; the
    target error is a labelled dotted line; the legend sits right of the axes, off the curves."""
    fig, ax = pyplot().subplots(figsize=(7.6, 4.6), dpi=120)
    n = 0
    for act, r in results.items():
        for lr, curve in r["rates"].items():
            best = float(lr) == r["lr"]
            ax.plot(range(1, len(curve) + 1), [100 * e for e in curve], color=f"C{n % 10}",
                    linestyle="-" if act == "relu" else "--", linewidth=2.6 if best else 1.3,
                    marker="o" if best else None, markersize=3,
                    label=f"{ACT_NAMES.get(act, act)}, lr {lr}" + (" (fastest)" if best else ""))
            n += 1
    ax.axhline(100 * target, color="black", linestyle=":", linewidth=1.2, label=f"target: {target:.0%} training error")
    ax.annotate(f"{target:.0%}", (0, 100 * target), xycoords=("axes fraction", "data"), xytext=(3, 2),
                textcoords="offset points", fontsize=8)
    run = ", ".join(x for x in (f"preset {preset}" if preset else "", "" if seed is None else f"seed {seed}") if x)
    ax.set(title=f"Figure 1: ReLU vs tanh, {net} on CIFAR-10" + (f"\n({run})" if run else ""),
           xlabel="epochs", ylabel="training error (%)")
    ax.grid(alpha=0.3)
    outside_legend(ax)
    return fig


ACT_NAMES = {"relu": "ReLU", "tanh": "tanh"}
NETS = {"layers-18pct": "cuda-convnet's layers-18pct net", "four-layer": "four-layer CNN"}


def redraw_figure_1(run, png) -> Path:
    """Figure 1 from a relu_vs_tanh run's record (its summary.json holds every rate's curve)."""
    card = json.loads((Path(run) / "summary.json").read_text())
    target = json.loads((Path(run) / "config.json").read_text())["config"]["target_error"]
    results = {act: card[act] for act in ACT_NAMES}
    return figure_1(results, target, png, NETS.get(card.get("net"), card.get("net", "")), card["preset"], card["seed"])


# The committed figures: `python -m milestones.03_alexnet.figures` redraws them from their run records;
# `... relu_vs_tanh <run dir> <png>` draws Figure 1 from any relu_vs_tanh run.
DRAW = {"relu_vs_tanh": redraw_figure_1}
COMMITTED = {"relu_vs_tanh_18pct_seed0.png": ("relu_vs_tanh", "results/03_alexnet/20261207-015037-fig1-layers-18pct")}

if __name__ == "__main__":
    redraw_main(__file__, DRAW, COMMITTED)
