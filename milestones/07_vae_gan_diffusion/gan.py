"""Generative adversarial nets (Goodfellow et al. 2014) and their deep convolutional form, DCGAN (Radford, Metz &
Chintala 2015).

A generator G maps noise z ~ p_z to a sample G(z); a discriminator D maps an image to the probability that it
came from the data rather than from G. They play the minimax game of eq. 1,

    min_G max_D  V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))].

D ascends V. Early in training D rejects G's samples with confidence, log(1 - D(G(z))) is flat there, and G
learns nothing; section 3 therefore has G maximise log D(G(z)) instead ("non-saturating"): the same fixed
point, much stronger gradients early on. Both discriminators here return logits a, D = sigmoid(a), and the
losses use log sigmoid(a) = log D and log sigmoid(-a) = log(1 - D), which stay finite for any a.

MLP GAN on MNIST: the configuration the paper's code released (goodfeli/adversarial, mnist.yaml):
    G: z (100) -> 1200 ReLU -> 1200 ReLU -> 784 sigmoid;   weights U(-0.05, 0.05)
    D: x (784) -> maxout 240 units x 5 pieces -> maxout 240 x 5 -> 1 sigmoid;   weights U(-0.005, 0.005),
       dropout on the input of every layer: the pixels kept with p 0.8, the hidden units with p 0.5.

DCGAN: strided convolutions instead of pooling, transposed convolutions to upsample, BatchNorm in G (all but the
output layer) and D (all but the input layer), no fully connected hidden layers, ReLU in G with a tanh output,
LeakyReLU(0.2) in D, every weight from N(0, 0.02). 5x5 kernels as in the paper's code (Newmu/dcgan_code).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError


# ---------------------------------------------------------------------------------------------------------
# The losses (eq. 1 and section 3)
# ---------------------------------------------------------------------------------------------------------

def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses in at least fp32, even when the forward pass ran in bf16/fp16 autocast."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def discriminator_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> torch.Tensor:
    """-V(D, G), averaged over the batch: D minimises -[log D(x) + log(1 - D(G(z)))]."""
    real, fake = _full(d_real_logits), _full(d_fake_logits)
    return -(F.logsigmoid(real).mean() + F.logsigmoid(-fake).mean())  # -[log D(x) + log(1 - D(G(z)))]


def generator_loss(d_fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """What G minimises, averaged over the batch.

    "minimax":        log(1 - D(G(z)))     (eq. 1 as written; saturates when D rejects the samples)
    "nonsaturating":  -log D(G(z))         (section 3: maximise log D(G(z)) instead)
    """
    fake = _full(d_fake_logits)
    if kind == "minimax":
        return F.logsigmoid(-fake).mean()  # log(1 - D(G(z)))
    if kind == "nonsaturating":
        return -F.logsigmoid(fake).mean()  # -log D(G(z))
    raise UserError(f"generator loss must be 'minimax' or 'nonsaturating', got {kind!r}")


# ---------------------------------------------------------------------------------------------------------
# Goodfellow et al. 2014: the MNIST MLPs
# ---------------------------------------------------------------------------------------------------------

class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013): h_j = max_k (W x + b)_{j,k}, k over `pieces` linear pieces."""

    def __init__(self, in_features: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)  # (B, units * pieces), each unit's pieces side by side
        return y.view(*y.shape[:-1], self.units, self.pieces).amax(-1)  # (B, units)


def _uniform_init(module: nn.Module, irange: float) -> None:
    """pylearn2's `irange`: weights uniform in [-irange, irange], biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -irange, irange)
            nn.init.zeros_(m.bias)


class MLPGenerator(nn.Module):
    """z (B, z_dim) -> ReLU layers -> sigmoid pixels (B, *image_shape) in [0, 1]."""

    def __init__(self, z_dim: int = 100, hidden: tuple[int, ...] = (1200, 1200),
                 image_shape: tuple[int, ...] = (1, 28, 28), noise: str = "gaussian", irange: float = 0.05):
        super().__init__()
        if noise not in ("gaussian", "uniform"):
            raise UserError(f"GAN noise must be 'gaussian' or 'uniform', got {noise!r}")
        self.z_dim, self.image_shape, self.noise_kind = z_dim, tuple(image_shape), noise
        sizes = [z_dim, *hidden]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(sizes[-1], math.prod(image_shape))
        _uniform_init(self, irange)

    def noise(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ p_z, (n, z_dim): N(0, I) (the released code's default) or U(-sqrt 3, sqrt 3) (unit variance)."""
        device = device if device is not None else self.out.weight.device
        if self.noise_kind == "gaussian":
            return torch.randn(n, self.z_dim, device=device, generator=generator)
        a = math.sqrt(3)
        return torch.rand(n, self.z_dim, device=device, generator=generator) * (2 * a) - a

    @torch.no_grad()
    def init_output_bias(self, mean_image: torch.Tensor, eps: float = 1e-3) -> None:
        """Start G at the data's pixel marginals: sigmoid(b_i) = mean of pixel i (as mnist.yaml does).
        mean_image in [0, 1], any shape with prod(image_shape) values; clamped to [eps, 1 - eps]."""
        p = mean_image.float().flatten().clamp(eps, 1 - eps).to(self.out.bias.device)
        self.out.bias.copy_(torch.log(p) - torch.log1p(-p))  # logit(p)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.out(self.hidden(z)))  # (B, D)
        return x.view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """x (B, ...) -> maxout layers with dropout -> logit (B,); D(x) = sigmoid(logit)."""

    def __init__(self, x_dim: int = 784, units: int = 240, pieces: int = 5, layers: int = 2,
                 input_dropout: float = 0.2, dropout: float = 0.5, irange: float = 0.005):
        super().__init__()
        self.input_drop = nn.Dropout(input_dropout)  # pixels kept with p 0.8
        blocks, size = [], x_dim
        for n in range(layers):
            if n > 0:
                blocks.append(nn.Dropout(dropout))  # hidden units kept with p 0.5
            blocks.append(Maxout(size, units, pieces))
            size = units
        self.hidden = nn.Sequential(*blocks)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(size, 1)
        _uniform_init(self, irange)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(self.input_drop(x.flatten(1)))  # (B, units)
        return self.out(self.drop(h)).squeeze(-1)  # (B,)


# ---------------------------------------------------------------------------------------------------------
# Radford et al. 2015: DCGAN
# ---------------------------------------------------------------------------------------------------------

def dcgan_layout(image_size: int) -> tuple[int, int]:
    """(start, stages): the generator starts from a start x start map and doubles it `stages` times.

    64 -> (4, 4): the paper's 4 -> 8 -> 16 -> 32 -> 64.  32 -> (4, 3).  28 -> (7, 2): 7 -> 14 -> 28.
    A smaller image drops the first (widest) stages; the layers nearest the image stay as at 64x64.
    """
    size, stages = image_size, 0
    while size > 7 and size % 2 == 0:
        size, stages = size // 2, stages + 1
    if stages == 0 or not 3 <= size <= 7:
        raise UserError(f"DCGAN image size must be 3..7 times a power of two (64, 32, 28, ...), got {image_size}")
    return size, stages


class DCGenerator(nn.Module):
    """z (B, z_dim) -> (B, channels, image_size, image_size) in [-1, 1].

    At 64x64 with width 128 the paper's Figure 1: z (100) -> 4x4x1024 -> 8x8x512 -> 16x16x256 -> 32x32x128 ->
    64x64x3. The first layer is a matrix multiplication reshaped into the 4x4 stack (the paper: "could be called
    fully connected ... but the result is reshaped into a 4-dimensional tensor"), no fully connected hidden layers.
    """

    def __init__(self, z_dim: int = 100, image_size: int = 64, channels: int = 3, width: int = 128):
        super().__init__()
        self.z_dim, self.image_size, self.channels = z_dim, image_size, channels
        self.start, stages = dcgan_layout(image_size)
        self.top = width * 2 ** (stages - 1)  # channels of the start map: 1024 at 64x64, width 128
        self.project = nn.Linear(z_dim, self.top * self.start ** 2, bias=False)
        self.bn0 = nn.BatchNorm2d(self.top)
        layers, c = [], self.top
        for _ in range(stages - 1):
            layers += [_up(c, c // 2), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers += [_up(c, channels), nn.Tanh()]  # output layer: no BatchNorm, tanh
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def noise(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ U(-1, 1)^z_dim, the paper's "uniform noise distribution" (the released code's range)."""
        device = device if device is not None else self.project.weight.device
        return torch.rand(n, self.z_dim, device=device, generator=generator) * 2 - 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.top, self.start, self.start)  # (B, 8w, 4, 4)
        return self.net(F.relu(self.bn0(h)))  # (B, C, H, W)


class DCDiscriminator(nn.Module):
    """(B, channels, image_size, image_size) -> logit (B,). The generator's mirror: 5x5 stride-2 convolutions
    doubling the channels (3 -> 128 -> 256 -> 512 -> 1024 at 64x64, width 128), the last map flattened into one
    sigmoid output."""

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 128):
        super().__init__()
        start, stages = dcgan_layout(image_size)
        layers, c = [_down(channels, width), nn.LeakyReLU(0.2)], width  # input layer: no BatchNorm
        for _ in range(stages - 1):
            layers += [_down(c, 2 * c), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        self.net = nn.Sequential(*layers)
        self.out = nn.Linear(c * start * start, 1, bias=False)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(x).flatten(1)).squeeze(-1)  # (B,)


def _up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """5x5 transposed convolution, stride 2: exactly doubles height and width."""
    return nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1, bias=False)


def _down(c_in: int, c_out: int) -> nn.Conv2d:
    """5x5 convolution, stride 2 (instead of pooling): halves height and width."""
    return nn.Conv2d(c_in, c_out, 5, stride=2, padding=2, bias=False)


@torch.no_grad()
def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: every weight N(0, 0.02); BatchNorm scale N(1, 0.02) and shift 0; biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
