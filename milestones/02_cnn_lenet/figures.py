"""PNG grids written into the run directory: first-layer kernels and feature maps, the RBF codes, and the test
digits the model gets wrong. torchvision's make_grid / save_image do the tiling."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image


def _big(x: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour upscale so each weight or pixel is a visible block."""
    return F.interpolate(x.float(), size=(size, size * x.shape[-1] // x.shape[-2]), mode="nearest")


def save_kernels(weight: torch.Tensor, path) -> Path:
    """First-layer kernels (C, 1, k, k), each scaled to its own min..max: dark = negative, light = positive."""
    grid = make_grid(_big(weight.detach().cpu(), 60), nrow=weight.shape[0], padding=4, normalize=True,
                     scale_each=True, pad_value=1.0)
    save_image(grid, path)
    return Path(path)


def save_feature_maps(image: torch.Tensor, maps: torch.Tensor, path) -> Path:
    """One input digit (1, H, W) followed by the first layer's maps for it (C, h, w), each scaled separately."""
    tiles = [image[None].float()] + [m[None, None].float() for m in maps]
    tiles = torch.cat([_big(t.cpu(), 112) for t in tiles])
    save_image(make_grid(tiles, nrow=len(tiles), padding=4, normalize=True, scale_each=True, pad_value=1.0), path)
    return Path(path)


def save_codes(codes: torch.Tensor, path) -> Path:
    """The 10 RBF centres drawn as their 12x7 bitmaps (ink white)."""
    save_image(make_grid(_big(codes.view(10, 1, 12, 7).cpu(), 96), nrow=10, padding=6, normalize=True,
                         pad_value=0.5), path)
    return Path(path)


def save_mistakes(images: torch.Tensor, true: torch.Tensor, pred: torch.Tensor, path, limit: int = 100) -> Path:
    """Up to `limit` misclassified test digits (N, 1, H, W) in [0, 1], ten a row; their labels go to a .txt
    beside the PNG, in the same order (row by row)."""
    path = Path(path)
    n = min(limit, len(images))
    if n == 0:
        return path
    save_image(make_grid(_big(images[:n].cpu(), 56), nrow=10, padding=4, pad_value=0.5), path)
    lines = [f"{i:3d}  true {int(t)}  predicted {int(p)}" for i, (t, p) in enumerate(zip(true[:n], pred[:n]))]
    path.with_suffix(".txt").write_text(f"{len(images)} test digits misclassified; the first {n}, row by row "
                                        f"(10 a row):\n" + "\n".join(lines) + "\n")
    return path
