"""The paper's figures drawn from our runs.

Figure 1: training error against epochs of the four-layer net (or cuda-convnet's layers-18pct net), ReLU (solid)
against tanh (dashed).
Figure 3: the first layer's kernels as colour images, one block per GPU half. In the paper the 48 kernels on
GPU 1 came out largely colour-agnostic (edges, frequencies) and the 48 on GPU 2 largely colour-specific (blobs
of colour), because conv1's two halves feed separate conv2 groups.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from common.plot import pyplot, save

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


def figure_1(results: dict, target: float, path, net: str = "Four-layer CNN") -> Path:
    """results: {activation: {"lr": fastest rate, "rates": {lr: [training error after each epoch]}}}. Every
    rate is drawn; each activation's fastest is bold, the rest thin; the target error is a grey line."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.4), dpi=120)
    for i, (act, r) in enumerate(results.items()):
        for lr, curve in r["rates"].items():
            best = float(lr) == r["lr"]
            ax.plot(range(1, len(curve) + 1), [100 * e for e in curve], color=f"C{i}",
                    linestyle="-" if act == "relu" else "--", linewidth=2.4 if best else 0.9,
                    alpha=1.0 if best else 0.6, label=f"{act}, lr {lr}" + (" (fastest)" if best else ""))
    ax.axhline(100 * target, color="grey", linewidth=0.8)
    ax.set(title=f"{net} on CIFAR-10 (cf. the paper's Figure 1)", xlabel="epochs",
           ylabel="training error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, path)
