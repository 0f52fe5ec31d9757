"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012), its CIFAR-10 sibling, and the four-layer net of Figure 1.

The paper's network (Section 3.5, Figure 2), on a 227x227x3 crop (see NOTES.md for why not 224):

    conv1  96 x 11x11 stride 4        ReLU  LRN  maxpool 3/2     55 -> 27     both GPUs see the whole image
    conv2 256 x  5x5  pad 2, groups 2 ReLU  LRN  maxpool 3/2     27 -> 13     each GPU sees only its own half
    conv3 384 x  3x3  pad 1           ReLU                       13           crosses between the GPUs
    conv4 384 x  3x3  pad 1, groups 2 ReLU                       13
    conv5 256 x  3x3  pad 1, groups 2 ReLU       maxpool 3/2     13 -> 6
    fc6  4096  dropout 0.5  ReLU;  fc7 4096  dropout 0.5  ReLU;  fc8 1000 (softmax in the loss)

The two-GPU split is exactly a grouped convolution: a layer with `groups=2` connects output half g only to
input half g. Local response normalisation (Section 3.3), the paper's form:

    b^i_{x,y} = a^i_{x,y} / ( k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j_{x,y})^2 )^beta
    k = 2, n = 5, alpha = 1e-4, beta = 0.75

torch.nn.LocalResponseNorm divides the sum by n first (it uses an average), so the paper's alpha maps to
alpha_torch = n * alpha_paper = 5e-4; the window (2 maps either side, clipped at the edges) is the same.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def paper_lrn(a: torch.Tensor, n: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75) -> torch.Tensor:
    """Section 3.3's formula, literally, over the channels of a (B, N, H, W). A reference for tests, not for speed."""
    N = a.shape[1]
    b = torch.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        s = a[:, lo:hi + 1].pow(2).sum(1)  # (B, H, W)
        b[:, i] = a[:, i] / (k + alpha * s).pow(beta)
    return b


class LRN(nn.Module):
    """Response normalisation across adjacent kernel maps, within each GPU's own maps (`groups` halves)."""

    def __init__(self, n: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, groups: int = 1):
        super().__init__()
        self.groups = groups
        self.norm = nn.LocalResponseNorm(size=n, alpha=alpha * n, beta=beta, k=k)  # torch averages: alpha * n

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        B, C, H, W = a.shape
        b = self.norm(a.reshape(B * self.groups, C // self.groups, H, W))  # each GPU normalises its own maps
        return b.reshape(B, C, H, W)


def pool_layer(z: int) -> nn.MaxPool2d:
    """Max-pooling with stride s=2 over z x z windows. z=3 overlaps (Section 3.4); ceil mode lets the last window
    hang over an even-sized map's edge, so z=3 and z=2 give the same output size on odd (55, 27, 13: the paper's
    "equivalent dimensions") and on even (32, 16, 8: CIFAR) maps alike."""
    return nn.MaxPool2d(z, stride=2, ceil_mode=z == 3)


def pooled_size(n: int, z: int) -> int:
    return -(-(n - z) // 2) + 1 if z == 3 else (n - z) // 2 + 1


@dataclass(frozen=True)
class AlexNetConfig:
    channels: tuple = (96, 256, 384, 384, 256)  # conv1..conv5 kernel maps (both GPUs together)
    kernels: tuple = (11, 5, 3, 3, 3)
    strides: tuple = (4, 1, 1, 1, 1)
    paddings: tuple = (0, 2, 1, 1, 1)
    pool_after: tuple = (True, True, False, False, True)  # max-pooling after conv1, conv2 and conv5
    hidden: int = 4096  # fc6 and fc7 units
    num_classes: int = 1000
    image_size: int = 227
    groups: int = 2  # 2 = the paper's two-GPU split; 1 = one big GPU
    activation: str = "relu"  # relu (the paper) or tanh (what it replaced)
    lrn: bool = True
    pool_kernel: int = 3  # z = 3, s = 2: overlapping; z = 2, s = 2: the traditional kind
    dropout: float = 0.5


IMAGENET = AlexNetConfig()
# The same design sized for 32x32: 5x5 / stride 1 first layer (no room for stride 4), half the maps, 1024-unit
# fully connected layers. Pools at 32 -> 16 -> 8 -> 4.
CIFAR = AlexNetConfig(channels=(64, 128, 192, 192, 128), kernels=(5, 5, 3, 3, 3), strides=(1, 1, 1, 1, 1),
                      paddings=(2, 2, 1, 1, 1), hidden=1024, num_classes=10, image_size=32)
GROUPED = (False, True, False, True, True)  # which convolutions stay within one GPU (conv2, conv4, conv5)


class AlexNet(nn.Module):
    def __init__(self, cfg: AlexNetConfig = IMAGENET):
        super().__init__()
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {cfg.activation!r}")
        self.cfg = cfg
        layers, c_in, size = [], 3, cfg.image_size
        for i, (c, k, s, p, pool) in enumerate(zip(cfg.channels, cfg.kernels, cfg.strides, cfg.paddings,
                                                   cfg.pool_after)):
            g = cfg.groups if GROUPED[i] else 1
            block = [nn.Conv2d(c_in, c, k, s, p, groups=g), ACTIVATIONS[cfg.activation]()]
            if cfg.lrn and i < 2:  # normalisation after the ReLU of conv1 and conv2
                block.append(LRN(groups=cfg.groups))
            if pool:
                block.append(pool_layer(cfg.pool_kernel))
            layers.append(nn.Sequential(*block))
            size = (size + 2 * p - k) // s + 1
            if pool:
                size = pooled_size(size, cfg.pool_kernel)
            c_in = c
        self.features = nn.ModuleList(layers)  # features[i] is conv{i+1} with what follows it
        self.feature_shape = (c_in, size, size)
        d = c_in * size * size
        act = ACTIVATIONS[cfg.activation]
        self.classifier = nn.Sequential(  # dropout on the outputs of the two hidden fc layers (Section 4.2)
            nn.Linear(d, cfg.hidden), act(), nn.Dropout(cfg.dropout),            # fc6
            nn.Linear(cfg.hidden, cfg.hidden), act(), nn.Dropout(cfg.dropout),   # fc7
            nn.Linear(cfg.hidden, cfg.num_classes),                              # fc8
        )
        self.paper_init()

    @property
    def convs(self) -> list[nn.Conv2d]:
        return [block[0] for block in self.features]

    @property
    def fcs(self) -> list[nn.Linear]:
        return [m for m in self.classifier if isinstance(m, nn.Linear)]

    def paper_init(self) -> None:
        """Section 5: weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fc layers, else 0.
        (The constant 1 hands ReLUs positive inputs early on.)"""
        layers = self.convs + self.fcs
        for layer in layers:
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.zeros_(layer.bias)
        for layer in (layers[1], layers[3], layers[4], layers[5], layers[6]):  # conv2, conv4, conv5, fc6, fc7
            nn.init.ones_(layer.bias)

    def modern_init(self) -> None:
        """He et al. (2015) initialisation with zero biases: trains from the first step at any depth."""
        for layer in self.convs + self.fcs:
            nonlin = "relu" if self.cfg.activation == "relu" else "tanh"
            nn.init.kaiming_normal_(layer.weight, nonlinearity=nonlin)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.fcs[-1].weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.features:  # (B, 3, 227, 227) -> (B, 256, 6, 6)
            x = block(x)
        return self.classifier(x.flatten(1))  # (B, num_classes) logits


def alexnet(num_classes: int = 1000, **overrides) -> AlexNet:
    """The paper's ImageNet network (`overrides` change single design choices, e.g. groups=1, lrn=False)."""
    return AlexNet(replace(IMAGENET, num_classes=num_classes, **overrides))


def alexnet_cifar(**overrides) -> AlexNet:
    return AlexNet(replace(CIFAR, **overrides))


class FourLayerCNN(nn.Module):
    """The kind of net behind Figure 1 (ReLU vs tanh on CIFAR-10): three 5x5 conv layers (32, 32, 64 maps) with
    3/2 max-pooling and one fully connected layer, no normalisation and no regularisation of any kind."""

    def __init__(self, activation: str = "relu", num_classes: int = 10, widths=(32, 32, 64)):
        super().__init__()
        act = ACTIVATIONS[activation]
        layers, c_in = [], 3
        for c in widths:
            layers += [nn.Conv2d(c_in, c, 5, padding=2), act(), nn.MaxPool2d(3, 2, ceil_mode=True)]
            c_in = c
        self.features = nn.Sequential(*layers)  # (B, 3, 32, 32) -> (B, 64, 4, 4)
        self.fc = nn.Linear(c_in * 4 * 4, num_classes)

    @property
    def layers(self) -> list[nn.Module]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)] + [self.fc]

    def paper_init(self, std: float = 0.01, relu_bias: float = 1.0) -> None:
        """Section 5's kind of initialisation: weights ~ N(0, std^2) (the paper's 0.01) in every layer. Biases
        0 in conv1 and the output layer; in the later hidden layers `relu_bias` for ReLU units (the paper's 1,
        set "to provide the ReLUs with positive inputs") and 0 for tanh units, for which a constant 1 would do
        the opposite (start them part-way into saturation; NOTES.md)."""
        hidden_bias = relu_bias if isinstance(self.features[1], nn.ReLU) else 0.0
        for i, layer in enumerate(self.layers):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.constant_(layer.bias, hidden_bias if 0 < i < len(self.layers) - 1 else 0.0)

    def modern_init(self) -> None:
        """He et al. (2015): std sqrt(2 / fan_in) for ReLU (gain 5/3 for tanh), zero biases."""
        nonlin = "relu" if isinstance(self.features[1], nn.ReLU) else "tanh"
        for layer in self.layers:
            nn.init.kaiming_normal_(layer.weight, nonlinearity=nonlin)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class SpatialResponseNorm(nn.Module):
    """cuda-convnet's `rnorm` layer: each unit divided by the activity of its own map around it,

        b_{x,y} = a_{x,y} / (1 + (scale / size^2) * sum over the size x size window centred on (x, y) of a^2)^pow

    the window clipped at the map's edges (the divisor stays size^2). Not the paper's LRN, which sums across
    adjacent maps at one position (cuda-convnet's `cmrnorm`)."""

    def __init__(self, size: int = 3, scale: float = 5e-5, pow: float = 0.75):
        super().__init__()
        self.size, self.scale, self.pow = size, scale, pow

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        mean_sq = F.avg_pool2d(a.pow(2), self.size, 1, self.size // 2, count_include_pad=True)  # sum / size^2
        return a / (1 + self.scale * mean_sq).pow(self.pow)


class Layers18pct(nn.Module):
    """cuda-convnet's example net `layers-18pct.cfg` / `layer-params-18pct.cfg` (Krizhevsky's CIFAR-10 net of
    2011, the kind behind the paper's Figure 1), its activation a switch:

        conv1 32 x 5x5 pad 2, act   max-pool 3/2   rnorm 3     32 -> 16
        conv2 32 x 5x5 pad 2, act   avg-pool 3/2   rnorm 3     16 -> 8
        conv3 64 x 5x5 pad 2, act   avg-pool 3/2                8 -> 4
        fc10  1024 -> 10 (softmax in the loss)

    Pools start at 0 and run while a window starts inside the map (ceil mode; an average is over the pixels
    inside). Initialisation as the config file's initW: N(0, 0.0001^2) in conv1, N(0, 0.01^2) in conv2, conv3
    and fc10; biases 0."""

    INIT_W = (1e-4, 1e-2, 1e-2, 1e-2)  # conv1, conv2, conv3, fc10 (layers-18pct.cfg, initW)

    def __init__(self, activation: str = "relu", num_classes: int = 10):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), act(), nn.MaxPool2d(3, 2, ceil_mode=True), SpatialResponseNorm(),
            nn.Conv2d(32, 32, 5, padding=2), act(), nn.AvgPool2d(3, 2, ceil_mode=True), SpatialResponseNorm(),
            nn.Conv2d(32, 64, 5, padding=2), act(), nn.AvgPool2d(3, 2, ceil_mode=True),
        )  # (B, 3, 32, 32) -> (B, 64, 4, 4)
        self.fc = nn.Linear(64 * 4 * 4, num_classes)
        self.config_init()

    @property
    def layers(self) -> list[nn.Module]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)] + [self.fc]

    def config_init(self) -> None:
        for layer, std in zip(self.layers, self.INIT_W):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def paper_param_count(cfg: AlexNetConfig = IMAGENET) -> int:
    """The parameter count worked out layer by layer, as in NOTES.md (weights + biases)."""
    total, c_in, size = 0, 3, cfg.image_size
    for i, (c, k, s, p) in enumerate(zip(cfg.channels, cfg.kernels, cfg.strides, cfg.paddings)):
        g = cfg.groups if GROUPED[i] else 1
        total += c * (c_in // g) * k * k + c  # each output map sees c_in / g input maps
        size = (size + 2 * p - k) // s + 1
        if cfg.pool_after[i]:
            size = pooled_size(size, cfg.pool_kernel)
        c_in = c
    d = c_in * size * size
    for a, b in ((d, cfg.hidden), (cfg.hidden, cfg.hidden), (cfg.hidden, cfg.num_classes)):
        total += a * b + b
    return total


def first_layer_kernels(model: nn.Module) -> torch.Tensor:
    """conv1's weights (C_out, 3, k, k), the images of the paper's Figure 3."""
    conv = model.convs[0] if isinstance(model, AlexNet) else next(m for m in model.modules()
                                                                  if isinstance(m, nn.Conv2d))
    return conv.weight.detach().float().cpu()

