"""Getting MNIST into each paper's input format, and the 1998 paper's distortions, all on tensors.

MNIST digits are 28x28 with the digit's 20x20 box centred by its centre of mass.
- LeNet-5 (1998, Section III.A) reads a 32x32 field: the 28x28 image padded by 2 pixels of background.
  Pixels are scaled so that background is -0.1 and ink is 1.175 (mean about 0, variance about 1).
- The 1989 net read 16x16 zip-code digits normalised to fill the frame, in [-1, 1]. The zip-code set is not
  public, so we crop MNIST's central 22x22 (the 20x20 box plus a pixel of margin) and shrink it to 16x16.
"""

import math

import torch
import torch.nn.functional as F


def pad_to_32(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) uint8 -> (N, 1, 32, 32) uint8, background 0."""
    return F.pad(x, (2, 2, 2, 2))


def shrink_to_16(x: torch.Tensor, batch: int = 10000) -> torch.Tensor:
    """(N, 1, 28, 28) uint8 -> (N, 1, 16, 16) uint8: central 22x22 crop, area-averaged down to 16x16."""
    out = []
    for i in range(0, len(x), batch):  # in slices, to bound peak memory
        crop = x[i:i + batch, :, 3:25, 3:25].float()
        out.append(F.interpolate(crop, size=(16, 16), mode="area").round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def scale_1998(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> background -0.1, ink 1.175."""
    return x * 1.275 - 0.1


def scale_1989(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> background -1, ink +1."""
    return x * 2 - 1


def distort(x: torch.Tensor, shift: float = 2.0, scale: float = 0.1, squeeze: float = 0.1, shear: float = 0.15,
            rotate: float = 0.0) -> torch.Tensor:
    """The 1998 paper's training distortions (Section V.B): random planar affine maps made of a translation, a
    scaling, a 'squeeze' (narrower and taller at once, or the reverse) and a horizontal shear, drawn afresh for
    every image. x: (B, C, H, W) float with background 0. Ranges are ours: the paper does not give them.
        shift    up to this many pixels each way        scale   factor in [1 - scale, 1 + scale]
        squeeze  x-factor (1+q), y-factor 1/(1+q), |q| <= squeeze      shear  x += shear * y, |shear| <= shear
    One affine_grid + grid_sample for the whole batch: no per-image Python, runs wherever x lives."""
    B, _, H, W = x.shape
    u = torch.rand(B, 6, device=x.device) * 2 - 1  # (B, 6) in [-1, 1]
    s = 1 + scale * u[:, 0]
    q = 1 + squeeze * u[:, 1]
    h = shear * u[:, 2]
    a = rotate * math.pi / 180 * u[:, 5]
    sx, sy = s * q, s / q
    cos, sin = torch.cos(a), torch.sin(a)
    # theta maps output coordinates to input coordinates (in [-1, 1] units): the distributions are symmetric,
    # so sampling the inverse map directly is the same as sampling the map.
    theta = torch.stack([
        torch.stack([sx * cos, sx * (h * cos - sin), shift * 2 / W * u[:, 3]], 1),
        torch.stack([sy * sin, sy * (h * sin + cos), shift * 2 / H * u[:, 4]], 1),
    ], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
