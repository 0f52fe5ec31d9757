"""LeCun's two convolutional networks, layer by layer as the papers describe them.

LeNet1989  "Backpropagation Applied to Handwritten Zip Code Recognition" (Neural Computation 1989)
           16x16 -> H1 12@8x8 -> H2 12@4x4 -> H3 30 -> 10,   9,760 free parameters
LeNet5     "Gradient-Based Learning Applied to Document Recognition" (Proc. IEEE 1998), Section II.B
           32x32 -> C1 6@28x28 -> S2 6@14x14 -> C3 16@10x10 -> S4 16@5x5 -> C5 120 -> F6 84 -> RBF 10,
           60,000 trainable parameters

Both squash with the paper's sigmoid  f(a) = A tanh(S a),  A = 1.7159, S = 2/3  (1998, eq. 6 and Appendix A),
and both start from weights uniform in [-2.4/F, 2.4/F], F the fan-in of the unit (Appendix C).

Every forward pass returns class *scores*, highest = predicted class. For the RBF output they are the negated
penalties -y_i, so `argmax` picks the class whose code is nearest, as the paper's classifier does.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

A, S = 1.7159, 2.0 / 3.0


def scaled_tanh(a: torch.Tensor) -> torch.Tensor:
    """f(a) = A tanh(S a): f(+-1) = +-1, and the gain is close to 1 around the targets."""
    return A * torch.tanh(S * a)


ACTIVATIONS = {"scaled_tanh": scaled_tanh, "relu": torch.relu}


def lecun_uniform_(t: torch.Tensor, fan_in) -> torch.Tensor:
    """Appendix C: uniform in [-2.4/F_i, 2.4/F_i]. `fan_in` is a number or one number per output unit (dim 0)."""
    with torch.no_grad():
        bound = 2.4 / torch.as_tensor(fan_in, dtype=t.dtype).reshape(-1, *([1] * (t.dim() - 1)))
        return t.uniform_(-1, 1).mul_(bound)


# -------------------------------------------------------------------------------------------------------------
# Connection tables
# -------------------------------------------------------------------------------------------------------------

def c3_table() -> torch.Tensor:
    """Table I of the 1998 paper: which S2 maps (rows) each C3 map (columns) looks at. (6, 16) bool.

    Maps 0-5 take 3 contiguous S2 maps, 6-11 take 4 contiguous, 12-14 take 4 non-contiguous, 15 takes all six.
    """
    inputs = [(i, i + 1, i + 2) for i in range(6)] + [(i, i + 1, i + 2, i + 3) for i in range(6)]
    inputs += [(0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5)]
    table = torch.zeros(6, 16, dtype=torch.bool)
    for j, rows in enumerate(inputs):
        table[[r % 6 for r in rows], j] = True
    return table


def h2_table() -> torch.Tensor:
    """The 1989 paper's H2: each of 12 maps sees 8 of the 12 H1 maps, but the paper does not say which.
    Our choice: H2 map k sees H1 maps k, k+1, ..., k+7 (mod 12), so every H1 map feeds exactly 8 H2 maps and no
    two H2 maps share a set, the same cyclic idea as Table I of the 1998 paper. (12, 12) bool, rows = H1 maps."""
    table = torch.zeros(12, 12, dtype=torch.bool)
    for k in range(12):
        table[[(k + i) % 12 for i in range(8)], k] = True
    return table


class SparseConv2d(nn.Module):
    """A convolution where output map j sums only the input maps with table[i, j] True.

    Only the connected kernels are parameters (so they count, and train, exactly as in the paper); the dense
    (out, in, k, k) kernel with zeros elsewhere is assembled on each call and run as one conv2d.
    """

    def __init__(self, table: torch.Tensor, k: int, stride: int = 1, padding: int = 0, pad_value: float = 0.0,
                 bias: bool = True):
        super().__init__()
        self.register_buffer("table", table.t().contiguous(), persistent=False)  # (out, in)
        self.k, self.stride, self.padding, self.pad_value = k, stride, padding, pad_value
        fan_in = self.table.sum(1) * k * k  # per output map
        self.weight = nn.Parameter(lecun_uniform_(torch.empty(int(self.table.sum()), k, k), fan_in.repeat_interleave(
            self.table.sum(1))))
        self.bias = nn.Parameter(lecun_uniform_(torch.empty(self.table.shape[0]), fan_in)) if bias else None

    def kernel(self) -> torch.Tensor:
        out, inp = self.table.shape
        mask = self.table[:, :, None, None].expand(out, inp, self.k, self.k)
        return self.weight.new_zeros(out, inp, self.k, self.k).masked_scatter(mask, self.weight)  # (out, in, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding,) * 4, value=self.pad_value)
        return F.conv2d(x, self.kernel().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                        stride=self.stride)


# -------------------------------------------------------------------------------------------------------------
# 1989: the zip-code network
# -------------------------------------------------------------------------------------------------------------

class LeNet1989(nn.Module):
    """H1 and H2 share weights within a map but give every unit its own bias (12*8*8 and 12*4*4 biases).
    Outside the image, inputs take the background value -1, so 5x5 kernels at stride 2 give 8x8 and 4x4 maps.

        H1: 12 x 25 weights + 768 biases = 1,068      H3: 192*30 + 30 = 5,790
        H2: 12 x 8 x 25 weights + 192 biases = 2,592  out: 30*10 + 10 = 310        total 9,760
    """

    def __init__(self):
        super().__init__()
        self.h1 = SparseConv2d(torch.ones(1, 12, dtype=torch.bool), 5, stride=2, padding=2, pad_value=-1.0,
                               bias=False)
        self.h1_bias = nn.Parameter(lecun_uniform_(torch.empty(12, 8, 8), 25))
        self.h2 = SparseConv2d(h2_table(), 5, stride=2, padding=2, pad_value=-1.0, bias=False)
        self.h2_bias = nn.Parameter(lecun_uniform_(torch.empty(12, 4, 4), 200))
        self.h3 = nn.Linear(192, 30)
        self.out = nn.Linear(30, 10)
        for layer in (self.h3, self.out):
            lecun_uniform_(layer.weight, layer.in_features)
            lecun_uniform_(layer.bias, layer.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 16, 16), background -1, ink +1
        h1 = scaled_tanh(self.h1(x) + self.h1_bias)  # (B, 12, 8, 8)
        h2 = scaled_tanh(self.h2(h1) + self.h2_bias)  # (B, 12, 4, 4)
        h3 = scaled_tanh(self.h3(h2.flatten(1)))  # (B, 30)
        return scaled_tanh(self.out(h3))  # (B, 10): target +1 for the class, -1 for the others


def squared_error(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 1989 criterion: 1/2 sum_i (out_i - d_i)^2 with d = +1 for the right class and -1 elsewhere, averaged
    over the batch."""
    d = F.one_hot(target, out.shape[-1]).float() * 2 - 1
    return 0.5 * (out.float() - d).pow(2).sum(-1).mean()


# -------------------------------------------------------------------------------------------------------------
# 1998: LeNet-5
# -------------------------------------------------------------------------------------------------------------

# Fig. 3 of the paper: each class's RBF centre is a stylized 7x12 bitmap of the character, +1 ink, -1 paper.
# The paper's bitmaps are not published as data; these are ours, drawn the same way.
_DIGITS = [
    "..###.. .#...#. #.....# #.....# #.....# #.....# #.....# #.....# #.....# #.....# .#...#. ..###..",
    "...#... ..##... .#.#... ...#... ...#... ...#... ...#... ...#... ...#... ...#... ...#... .#####.",
    "..###.. .#...#. #.....# ......# .....#. ....#.. ...#... ..#.... .#..... #...... #...... #######",
    "..###.. .#...#. ......# ......# .....#. ...##.. .....#. ......# ......# ......# .#...#. ..###..",
    "....#.. ...##.. ..#.#.. .#..#.. #...#.. #...#.. ####### ....#.. ....#.. ....#.. ....#.. ....#..",
    "####### #...... #...... #...... #####.. .....#. ......# ......# ......# ......# #....#. .####..",
    "..###.. .#..... #...... #...... #.###.. ##...#. #.....# #.....# #.....# #.....# .#...#. ..###..",
    "####### ......# ......# .....#. .....#. ....#.. ....#.. ...#... ...#... ..#.... ..#.... ..#....",
    "..###.. .#...#. #.....# #.....# .#...#. ..###.. .#...#. #.....# #.....# #.....# .#...#. ..###..",
    "..###.. .#...#. #.....# #.....# #.....# .#...## ..###.# ......# ......# .....#. ....#.. .###...",
]


def rbf_codes() -> torch.Tensor:
    """(10, 84) fixed +-1 centres, one 12-row by 7-column bitmap per digit, row by row."""
    rows = [d.split() for d in _DIGITS]
    assert all(len(r) == 12 and all(len(line) == 7 for line in r) for r in rows)
    return torch.tensor([[1.0 if c == "#" else -1.0 for c in "".join(r)] for r in rows])


class Subsampling(nn.Module):
    """S2 and S4: each unit adds its 2x2 non-overlapping inputs, multiplies by a trainable coefficient and adds a
    trainable bias (one of each per map)."""

    def __init__(self, maps: int):
        super().__init__()
        self.coef = nn.Parameter(lecun_uniform_(torch.empty(maps), 4))
        self.bias = nn.Parameter(lecun_uniform_(torch.empty(maps), 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        total = 4 * F.avg_pool2d(x, 2)  # sum of the 4 inputs
        return total * self.coef.to(x.dtype)[:, None, None] + self.bias.to(x.dtype)[:, None, None]


class LeNet5(nn.Module):
    """The paper's LeNet-5. Options (defaults are the paper): activation 'relu', pool 'max', c3 'full', output
    'softmax' (a Linear(84, 10) whose scores go to cross-entropy instead of the RBF layer)."""

    def __init__(self, activation: str = "scaled_tanh", pool: str = "subsample", c3: str = "table",
                 output: str = "rbf"):
        super().__init__()
        for name, value, allowed in (("activation", activation, ACTIVATIONS), ("pool", pool, ("subsample", "max")),
                                     ("c3", c3, ("table", "full")), ("output", output, ("rbf", "softmax"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
        self.activation, self.pool, self.c3_kind, self.output = activation, pool, c3, output
        self.c1 = nn.Conv2d(1, 6, 5)  # 6 * (25 + 1) = 156
        self.c3 = SparseConv2d(c3_table() if c3 == "table" else torch.ones(6, 16, dtype=torch.bool), 5)  # 1,516
        self.c5 = nn.Conv2d(16, 120, 5)  # 120 * (400 + 1) = 48,120
        self.f6 = nn.Linear(120, 84)  # 84 * (120 + 1) = 10,164
        for layer in (self.c1, self.c5, self.f6):
            fan_in = layer.weight[0].numel()
            lecun_uniform_(layer.weight, fan_in)
            lecun_uniform_(layer.bias, fan_in)
        if pool == "subsample":
            self.s2, self.s4 = Subsampling(6), Subsampling(16)  # 12 and 32 parameters
        if output == "rbf":
            self.register_buffer("codes", rbf_codes())  # fixed, not trained: (10, 84)
        else:
            self.head = nn.Linear(84, 10)

    def subsample(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        if self.pool == "max":
            return F.max_pool2d(x, 2)  # already squashed by the layer below: no coefficient, bias or sigmoid
        return ACTIVATIONS[self.activation](getattr(self, layer)(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Input (B, 1, 32, 32) -> the F6 state (B, 84) that the RBF units compare with their codes."""
        f = ACTIVATIONS[self.activation]
        c1 = f(self.c1(x))  # (B, 6, 28, 28)
        s2 = self.subsample(c1, "s2")  # (B, 6, 14, 14)
        c3 = f(self.c3(s2))  # (B, 16, 10, 10)
        s4 = self.subsample(c3, "s4")  # (B, 16, 5, 5)
        c5 = f(self.c5(s4)).flatten(1)  # (B, 120): a 5x5 kernel on a 5x5 map is a full connection
        return f(self.f6(c5))  # (B, 84)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if self.output == "softmax":
            return self.head(h)  # (B, 10) logits
        return -rbf_penalties(h, self.codes)  # (B, 10) scores = -y_i


def rbf_penalties(h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Eq. 7: y_i = sum_j (x_j - w_ij)^2, the squared distance of F6's state x to class i's code. (B, 10),
    computed in fp32 even under autocast (a distance of up to 84 * 2.7^2 needs the precision)."""
    return (h.float()[:, None, :] - codes.float()[None]).pow(2).sum(-1)


def map_loss(scores: torch.Tensor, target: torch.Tensor, j: float = 1.0) -> torch.Tensor:
    """Eq. 9, the paper's discriminative (MAP) criterion, from the scores -y_i:

        E = 1/P sum_p [ y_{D_p} + log( e^{-j} + sum_i e^{-y_i} ) ]

    The first term pulls the right code towards F6's state; the second pushes the wrong codes away, but only
    while their penalties are not already far above the constant j (a 'rubbish' class that always has penalty j).
    """
    y = -scores.float()  # (B, 10) penalties
    rubbish = torch.full_like(y[:, :1], -j)
    return (y.gather(1, target[:, None]).squeeze(1) + torch.logsumexp(torch.cat([-y, rubbish], 1), 1)).mean()


def mse_criterion(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 8, the simple maximum-likelihood criterion the paper starts from: E = 1/P sum_p y_{D_p}. It can collapse
    (all codes equal, F6 constant) if the RBF centres were learned; with fixed, distinct codes it cannot."""
    return (-scores.float()).gather(1, target[:, None]).mean()


def describe(model: nn.Module) -> list[tuple[str, int]]:
    """(name, trainable parameter count) per top-level layer."""
    rows = []
    for name, child in model.named_children():
        rows.append((name, sum(p.numel() for p in child.parameters() if p.requires_grad)))
    for name, p in model.named_parameters(recurse=False):
        rows.append((name, p.numel()))
    return rows


def is_faithful(model: nn.Module) -> bool:
    return isinstance(model, LeNet1989) or (isinstance(model, LeNet5) and (model.activation, model.pool,
                                                                            model.c3_kind, model.output)
                                            == ("scaled_tanh", "subsample", "table", "rbf"))


# -------------------------------------------------------------------------------------------------------------
# LeNet-5's layout with the options that came after it: the speedrun net
# -------------------------------------------------------------------------------------------------------------

class LeNet5Modern(nn.Module):
    """LeNet-5's maps and sizes (C1 6@28x28, S2, C3 16@10x10 fully connected to S2, S4, C5 120, F6 84, 10
    outputs) with what later practice changed: ReLU (Nair & Hinton 2010), max-pooling, batch normalization
    after each convolution (Ioffe & Szegedy 2015; the convolutions lose their biases, BN's beta replaces them),
    PyTorch's default (Kaiming-uniform) initialisation and a softmax output for cross-entropy. 61,728 trainable
    parameters: BN's 44 scales and shifts stand in for the 22 convolution biases of LeNet5(activation='relu',
    pool='max', c3='full', output='softmax'), which has 61,706. Input: (B, 1, 32, 32), as LeNet-5."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5, bias=False)  # 150
        self.bn1 = nn.BatchNorm2d(6)  # 12
        self.c3 = nn.Conv2d(6, 16, 5, bias=False)  # 2,400
        self.bn3 = nn.BatchNorm2d(16)  # 32
        self.c5 = nn.Linear(16 * 5 * 5, 120)  # 48,120: a 5x5 convolution over 5x5 maps is fully connected
        self.f6 = nn.Linear(120, 84)  # 10,164
        self.head = nn.Linear(84, 10)  # 850

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 32, 32)
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)  # (B, 6, 14, 14)
        x = F.max_pool2d(F.relu(self.bn3(self.c3(x))), 2)  # (B, 16, 5, 5)
        x = F.relu(self.c5(x.flatten(1)))  # (B, 120)
        return self.head(F.relu(self.f6(x)))  # (B, 10) class scores for cross-entropy
