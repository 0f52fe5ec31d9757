"""Figure 3 of the paper: the first layer's kernels as colour images, one block per GPU half.

In the paper the 48 kernels on GPU 1 came out largely colour-agnostic (edges, frequencies) and the 48 on GPU 2
largely colour-specific (blobs of colour), because conv1's two halves feed separate conv2 groups.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

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
