"""The noise-prediction network of DDPM (Ho, Jain & Abbeel 2020, Appendix B): a U-Net eps_theta(x_t, t).

The backbone is PixelCNN++'s U-Net with Wide-ResNet residual blocks, weight norm replaced by group
normalisation, self-attention at one resolution, and the time step t fed to every residual block:

    temb = MLP(sinusoid(t))                                   Transformer position encoding of t -> dense(4ch)
                                                              -> swish -> dense(4ch)
    down path   per resolution: num_res_blocks x [ResBlock (+ Attention)], then a stride-2 conv
    middle      ResBlock, Attention, ResBlock
    up path     per resolution: (num_res_blocks + 1) x [concat(skip) -> ResBlock (+ Attention)], then
                nearest-neighbour x2 + conv
    out         GroupNorm -> swish -> 3x3 conv to the image's channels

    ResBlock(x, temb):  h = conv1(swish(GN(x)));  h += dense(swish(temb));  h = conv2(dropout(swish(GN(h))))
                        return shortcut(x) + h                      (shortcut: 1x1 conv when channels change)
    Attention(x):       q, k, v = 1x1 convs of GN(x);  w = softmax(q^T k / sqrt(C)) over all H*W positions
                        return x + proj(v w^T)

Every output of the down path (the input conv, each block, each downsampling) is kept and concatenated,
last in first out, into the up path's blocks: the U-Net's skip connections.

Deviations from the released model, all deliberate:
  * GroupNorm uses gcd(32, channels) groups, which is 32 for every layer of the paper's models (all widths
    are multiples of 32) and fewer for narrow ones (ch=24 gives 8 groups at 24 channels, 16 at 48).
  * Nearest upsampling repeats each pixel twice (TF1's align_corners=True resize shifts a few rows).
Initialisation follows the release: every weight uniform variance-scaling (fan_avg) with scale 1, biases
0, and scale 1e-10 (zero in effect) for the last conv of each residual block, the attention's output
projection and the output conv, so every block starts as the identity and the net predicts eps = 0.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(32) as in the paper; gcd(32, C) groups when C is not a multiple of 32. eps as TF's 1e-6."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


def init_(layer: nn.Module, scale: float = 1.0) -> nn.Module:
    """TF's variance_scaling(scale, 'fan_avg', 'uniform') = Xavier-uniform with gain sqrt(scale); bias 0."""
    nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(scale))
    nn.init.zeros_(layer.bias)
    return layer


ZERO = 1e-10  # the release's stand-in for a zero init (variance scaling cannot take 0)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps (Vaswani et al. 2017, sec. 3.5, as tensor2tensor writes it):
    [sin(t w_0), ..., sin(t w_{d/2-1}), cos(t w_0), ..., cos(t w_{d/2-1})],  w_i = 10000^(-i / (d/2 - 1)).
    t: (B,) int -> (B, dim) float32."""
    half = dim // 2
    w = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    angle = t.float()[:, None] * w[None, :]  # (B, half)
    emb = torch.cat([angle.sin(), angle.cos()], dim=1)  # (B, 2 * half)
    return F.pad(emb, (0, dim % 2))  # (B, dim): an odd dim gets one zero


class ResBlock(nn.Module):
    """Wide-ResNet block with the time embedding added between its two convolutions."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), init_(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.temb_proj = init_(nn.Linear(temb_dim, c_out))
        self.norm2, self.dropout = group_norm(c_out), nn.Dropout(dropout)
        self.conv2 = init_(nn.Conv2d(c_out, c_out, 3, padding=1), ZERO)
        self.shortcut = init_(nn.Conv2d(c_in, c_out, 1)) if c_in != c_out else nn.Identity()  # "nin_shortcut"

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]  # the same vector at every pixel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class Attention(nn.Module):
    """Single-head self-attention over all H*W positions, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q, self.k, self.v = (init_(nn.Conv2d(channels, channels, 1)) for _ in range(3))
        self.proj_out = init_(nn.Conv2d(channels, channels, 1), ZERO)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (f(h).flatten(2) for f in (self.q, self.k, self.v))  # (B, C, N), N = H*W
        w = torch.einsum("bci,bcj->bij", q, k) * C ** -0.5  # (B, N, N): position i attends to j
        w = w.float().softmax(dim=-1).to(v.dtype)  # the softmax in fp32 under autocast
        h = torch.einsum("bij,bcj->bci", w, v).reshape(B, C, H, W)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """3x3 conv with stride 2, padded like TF's 'SAME' (one row and column after, none before)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = init_(nn.Conv2d(channels, channels, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = init_(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (B, C, 2H, 2W)


class UNet(nn.Module):
    """eps_theta(x_t, t): (B, C, H, W) images and (B,) int steps -> (B, C, H, W) predicted noise.

    Defaults are the paper's CIFAR-10 model (35.7M parameters). Attention goes after every residual block
    at the resolutions in `attn_resolutions` (side lengths, fixed at construction from `image_size`) and
    always in the middle. H and W must be divisible by 2^(len(ch_mult) - 1).
    """

    def __init__(self, in_channels: int = 3, ch: int = 128, ch_mult=(1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions=(16,), dropout: float = 0.1, image_size: int = 32):
        super().__init__()
        self.levels = len(ch_mult)
        check_size(image_size, image_size, self.levels)
        sizes = [image_size // 2 ** i for i in range(self.levels)]  # side length at each level
        for r in attn_resolutions:
            if r not in sizes:
                raise UserError(f"attention resolution {r} is not one of this U-Net's resolutions "
                                f"{', '.join(map(str, sizes))} (image size {image_size})")
        self.ch, self.num_res_blocks = ch, num_res_blocks
        temb_dim = 4 * ch
        self.temb = nn.Sequential(init_(nn.Linear(ch, temb_dim)), nn.SiLU(), init_(nn.Linear(temb_dim, temb_dim)))
        self.conv_in = init_(nn.Conv2d(in_channels, ch, 3, padding=1))

        skips = [ch]  # channels of every tensor the down path keeps for the up path
        c = ch
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.blocks, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                level.blocks.append(ResBlock(c, ch * mult, temb_dim, dropout))
                c = ch * mult
                level.attn.append(Attention(c) if sizes[i] in attn_resolutions else nn.Identity())
                skips.append(c)
            level.downsample = Downsample(c) if i < self.levels - 1 else nn.Identity()
            if i < self.levels - 1:
                skips.append(c)
            self.down.append(level)

        self.mid1, self.mid_attn, self.mid2 = (ResBlock(c, c, temb_dim, dropout), Attention(c),
                                               ResBlock(c, c, temb_dim, dropout))

        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(ch_mult))):
            level = nn.Module()
            level.blocks, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.blocks.append(ResBlock(c + skips.pop(), ch * mult, temb_dim, dropout))
                c = ch * mult
                level.attn.append(Attention(c) if sizes[i] in attn_resolutions else nn.Identity())
            level.upsample = Upsample(c) if i > 0 else nn.Identity()
            self.up.append(level)  # self.up[0] is the lowest resolution
        assert not skips

        self.norm_out = group_norm(c)
        self.conv_out = init_(nn.Conv2d(c, in_channels, 3, padding=1), ZERO)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_size(x.shape[-2], x.shape[-1], self.levels)
        temb = self.temb(timestep_embedding(t, self.ch))  # (B, 4ch)
        hs = [self.conv_in(x)]  # (B, ch, H, W)
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attn):
                hs.append(attn(block(hs[-1], temb)))
            if i < self.levels - 1:
                hs.append(level.downsample(hs[-1]))  # (B, C, H/2^(i+1), W/2^(i+1))
        h = self.mid2(self.mid_attn(self.mid1(hs[-1], temb)), temb)
        for level in self.up:
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), temb))  # skip connection
            h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)


def check_size(h: int, w: int, levels: int) -> None:
    n = 2 ** (levels - 1)
    for side in (h, w):
        if side % n:
            raise UserError(f"image size {side} is not divisible by {n}, which a U-Net with {levels} "
                            f"resolutions needs")
