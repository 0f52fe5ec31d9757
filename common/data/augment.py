"""Image augmentation on whole batches of tensors, on whatever device they live: no per-image Python."""

import torch


def random_crop(x: torch.Tensor, size: int, padding: int = 0, generator=None) -> torch.Tensor:
    """Each image of x (B, C, H, W) cropped to (size, size) at its own random offset, after zero padding."""
    if padding:
        x = torch.nn.functional.pad(x, (padding,) * 4)
    B, C, H, W = x.shape
    oy = torch.randint(0, H - size + 1, (B,), device=x.device, generator=generator)
    ox = torch.randint(0, W - size + 1, (B,), device=x.device, generator=generator)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]  # (B, size, 1)
    cols = (ox[:, None] + ar)[:, None, :]  # (B, 1, size)
    b = torch.arange(B, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2).contiguous()  # (B, C, size, size)


def random_hflip(x: torch.Tensor, p: float = 0.5, generator=None) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


_STATS = {}  # (mean, std, device, dtype) -> the (1, C, 1, 1) tensors, made once per device


def channel_stats(mean, std, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (1, C, 1, 1) tensors on `device`, built once: a tensor made from Python numbers
    on a GPU is a blocking host-to-device copy, which every training step would otherwise wait for."""
    key = (tuple(mean), tuple(std), str(device), dtype)
    if key not in _STATS:
        _STATS[key] = tuple(torch.tensor(v, dtype=dtype).view(1, -1, 1, 1).to(device) for v in (mean, std))
    return _STATS[key]


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or [0, 1] float images -> zero-mean, unit-variance channels (float)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    m, s = channel_stats(mean, std, x.device, x.dtype)
    return (x - m) / s
