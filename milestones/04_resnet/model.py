"""Deep residual networks (He, Zhang, Ren & Sun 2015, "Deep Residual Learning for Image Recognition").

The idea in one line (the paper's eq. 1):      y = F(x, {W_i}) + x
A stack of layers learns the residual F(x) = H(x) - x instead of the mapping H(x) itself; the shortcut adds
x back, so a block whose F is zero is exactly the identity and extra depth can never have to "learn" one.
When F changes the shape, the shortcut must too (eq. 2, y = F(x) + W_s x):
    option A  identity, with the extra channels zero-padded and space subsampled: no parameters
    option B  a 1x1 projection (conv + BN) only where the shape changes, identity elsewhere
    option C  a projection on every shortcut
`plain` builds the same network with no shortcut at all (the paper's plain baselines).

Two families, as in the paper:
    CIFAR (section 4.2)      resnet_cifar(depth): 6n+2 layers, 3 stages of 2n 3x3 convs, 16/32/64 filters, option A
    ImageNet (section 3.3)   resnet_imagenet(18|34|50|101|152): 7x7 stem, 4 stages, basic or bottleneck blocks,
                             option B
Every convolution is followed by BatchNorm (and has no bias: BN's beta replaces it); He initialisation.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

SHORTCUTS = ("A", "B", "C", "plain")


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    """A k x k convolution (no bias) followed by BatchNorm: the paper's unit of depth."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(c_out))


class ZeroPadShortcut(nn.Module):
    """Option A where the shape changes: take every `stride`-th pixel, append zero channels. No parameters."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, C_in, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, C_out, H/s, W/s): new channels are 0


def make_shortcut(c_in: int, c_out: int, stride: int, option: str) -> nn.Module | None:
    """The `x` (or `W_s x`) of y = F(x) + x. None means no shortcut (a plain network)."""
    if option == "plain":
        return None
    same = c_in == c_out and stride == 1
    if option == "C" or (option == "B" and not same):
        return conv_bn(c_in, c_out, 1, stride)  # W_s x
    if same:
        return nn.Identity()  # x
    if option == "A":
        return ZeroPadShortcut(c_in, c_out, stride)
    raise ValueError(f"shortcut option must be one of {SHORTCUTS}, got {option!r}")


class ResidualBlock(nn.Module):
    """y = relu(F(x) + shortcut(x)); subclasses define the layers of F in `residual`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        y = self.residual(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)  # y = F(x) + x   (eq. 1); the second ReLU comes after the addition
        return F.relu(y)


class BasicBlock(ResidualBlock):
    """Two 3x3 conv layers (the CIFAR nets, ResNet-18/34):  F(x) = BN(conv(relu(BN(conv(x)))))."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = conv_bn(c_in, width, 3, stride)
        self.conv2 = conv_bn(width, c_out, 3)
        self.shortcut = make_shortcut(c_in, c_out, stride, shortcut)

    def residual(self, x: torch.Tensor) -> torch.Tensor:  # F(x)
        return self.conv2(F.relu(self.conv1(x)))


class Bottleneck(ResidualBlock):
    """1x1 (reduce) -> 3x3 -> 1x1 (restore, 4x wider) for ResNet-50/101/152 (the paper's Fig. 5, right).
    The stride sits on the first 1x1 as in the paper's models; `stride_3x3=True` moves it to the 3x3
    ("ResNet v1.5", as torchvision does): same parameters, more multiply-adds, slightly better accuracy."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1, shortcut: str = "B", stride_3x3: bool = False):
        super().__init__()
        c_out = width * self.expansion
        s1, s3 = (1, stride) if stride_3x3 else (stride, 1)
        self.conv1 = conv_bn(c_in, width, 1, s1)
        self.conv2 = conv_bn(width, width, 3, s3)
        self.conv3 = conv_bn(width, c_out, 1)
        self.shortcut = make_shortcut(c_in, c_out, stride, shortcut)

    def residual(self, x: torch.Tensor) -> torch.Tensor:  # F(x)
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


class ResNet(nn.Module):
    """stem -> stages of blocks (the first block of a stage may downsample) -> global average pool -> fc."""

    def __init__(self, stem: nn.Module, block, c_stem: int, widths, blocks, strides, shortcut: str,
                 num_classes: int, **block_kw):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut option must be one of {SHORTCUTS}, got {shortcut!r}")
        self.stem = stem
        layers, c = [], c_stem
        for width, n, stride in zip(widths, blocks, strides):
            for i in range(n):
                layers.append(block(c, width, stride if i == 0 else 1, shortcut, **block_kw))
                c = width * block.expansion
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)
        self.reset_parameters()

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """He et al. 2015 ("Delving deep into rectifiers"): N(0, 2/n) with n = k*k*c_in, the forward case.
        BN starts as the identity (gamma 1, beta 0). `zero_init_residual` (Goyal et al. 2017, not the paper)
        sets the last gamma of every residual branch to 0, so each block starts as y = relu(x)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for b in self.blocks:
                last = b.conv3 if isinstance(b, Bottleneck) else b.conv2
                nn.init.zeros_(last[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_classes)
        x = self.blocks(self.stem(x))  # (B, C, H', W')
        return self.fc(x.mean((2, 3)))  # global average pooling, then the fc layer


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 family (section 4.2): 32x32 inputs, 6n+2 weighted layers
# ---------------------------------------------------------------------------------------------------------

def cifar_blocks_per_stage(depth: int) -> int:
    """n for a 6n+2-layer CIFAR network: the first conv, 3 stages of n two-layer blocks, the fc layer."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has 6n+2 layers (20, 32, 44, 56, 110, 1202, ...); depth {depth} is not "
                         f"of that form")
    return (depth - 2) // 6


def resnet_cifar(depth: int = 20, shortcut: str = "A", num_classes: int = 10, width: int = 16) -> ResNet:
    """ResNet-(6n+2) of the paper's Table 6 (shortcut="plain" gives the plain net of the same depth).
    Feature maps 32x32 / 16x16 / 8x8 with width / 2 width / 4 width filters (the paper: 16 / 32 / 64; a
    narrower `width` is ours, for CPU budgets); stride-2 convs subsample."""
    n = cifar_blocks_per_stage(depth)
    if width < 1:
        raise ValueError(f"width (filters of the first stage) must be >= 1, got {width}")
    stem = nn.Sequential(conv_bn(3, width, 3), nn.ReLU(inplace=True))  # the first 3x3 conv layer
    return ResNet(stem, BasicBlock, width, (width, 2 * width, 4 * width), (n, n, n), (1, 2, 2), shortcut,
                  num_classes)


# ---------------------------------------------------------------------------------------------------------
# ImageNet family (Table 1): 224x224 inputs
# ---------------------------------------------------------------------------------------------------------

IMAGENET_BLOCKS = {  # depth: (block, blocks in conv2_x .. conv5_x)
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def resnet_imagenet(depth: int = 50, shortcut: str = "B", num_classes: int = 1000, **block_kw) -> ResNet:
    """ResNet-18/34/50/101/152 of Table 1: conv1 7x7/2 + 3x3/2 max pool, then 64/128/256/512-wide stages."""
    if depth not in IMAGENET_BLOCKS:
        raise ValueError(f"the ImageNet ResNets have depth {sorted(IMAGENET_BLOCKS)}; got {depth}")
    block, blocks = IMAGENET_BLOCKS[depth]
    stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))  # (B, 64, 56, 56)
    return ResNet(stem, block, 64, (64, 128, 256, 512), blocks, (1, 2, 2, 2), shortcut, num_classes, **block_kw)


def build(name: str, num_classes: int = 10, shortcut: str = "A", width: int = 16) -> ResNet:
    """A CIFAR net by name: 'resnet20', 'resnet110', 'plain56', ... (`shortcut` applies to the resnets)."""
    for prefix, option in (("resnet", shortcut), ("plain", "plain")):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return resnet_cifar(int(name[len(prefix):]), option, num_classes, width)
    raise ValueError(f"model must be resnet<depth> or plain<depth> with depth = 6n+2 (e.g. resnet20, plain56); "
                     f"got {name!r}")


# ---------------------------------------------------------------------------------------------------------
# Counting multiply-adds (the paper's "FLOPs")
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def count_multiply_adds(model: nn.Module, input_size=(1, 3, 224, 224)) -> int:
    """Multiply-adds of one forward pass of one image, over conv and fc layers (what the paper's Table 1 counts;
    BN, ReLU, pooling and the shortcut additions are left out, as they are there)."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        total += out[0].numel() * k  # every output value is a dot product of length k

    def fc_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else fc_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(input_size, device=p.device, dtype=p.dtype))  # where the model is
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total
