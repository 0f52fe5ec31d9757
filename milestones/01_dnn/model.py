"""The multi-layer perceptron of Rumelhart, Hinton & Williams (1986), with modern options.

The paper's unit (eqs. 1-2):   x_j = sum_i y_i w_ji + b_j        y_j = 1 / (1 + exp(-x_j))
The paper's error (eq. 3):      E = 1/2 sum_c sum_j (y_jc - d_jc)^2
The update (eqs. 8-9):          dw(t) = -eps dE/dw(t) + alpha dw(t-1)      (SGD with momentum)

The forward pass returns the output units' total input x (logits); the loss decides how outputs are read:
`squared_error` applies the paper's logistic output unit, `cross_entropy` a softmax.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


class MLP(nn.Module):
    """Fully connected layers `sizes[0] -> sizes[1] -> ... -> sizes[-1]`, activation between them."""

    def __init__(self, sizes: list[int], activation: str = "sigmoid", init_range: float | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.sizes, self.activation = list(sizes), activation
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if init_range is not None:  # the paper: weights (and biases) uniform in [-r, r]
            for p in self.parameters():
                nn.init.uniform_(p, -init_range, init_range)
        elif activation == "relu":  # He et al. 2015 for ReLU; PyTorch's default otherwise
            for layer in self.layers:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = ACTIVATIONS[self.activation]
        y = x.flatten(1)  # (B, D)
        for layer in self.layers[:-1]:
            y = f(layer(y))  # y_j = f(x_j), x_j = sum_i y_i w_ji + b_j
        return self.layers[-1](y)  # (B, K): the output units' total input


def squared_error(logits: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """The paper's E = 1/2 sum (y - d)^2 with logistic outputs y. `target` is class indices or a (B, K) tensor."""
    y = torch.sigmoid(_full(logits))
    d = F.one_hot(target, logits.shape[-1]) if target.dim() == 1 and logits.shape[-1] > 1 else target
    e = 0.5 * (y - d.to(y.dtype).view_as(y)).pow(2).sum(-1)
    return e.sum() if reduction == "sum" else e.mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(_full(logits), target, reduction=reduction)


def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses are computed in at least fp32, even when the forward pass ran in bf16/fp16 autocast."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


LOSSES = {"mse": squared_error, "ce": cross_entropy}


@torch.no_grad()
def generalized_delta_rule(model: MLP, x: torch.Tensor, d: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """dE/dw and dE/db for every layer, computed by hand with the paper's equations (logistic units, squared
    error summed over cases). Used to check autograd; training uses autograd.

    Output units (eqs. 4, 5):  delta_j = dE/dx_j = (y_j - d_j) y_j (1 - y_j)
    Weights (eq. 6):           dE/dw_ji = sum_c delta_j y_i
    Hidden units (eqs. 7, 5):  delta_i = (sum_j delta_j w_ji) y_i (1 - y_i)
    """
    assert model.activation == "sigmoid", "the paper's rule is for logistic units"
    ys = [x.flatten(1)]  # activity of every layer, input first
    for layer in model.layers:
        ys.append(torch.sigmoid(ys[-1] @ layer.weight.T + layer.bias))
    y = ys[-1]
    delta = (y - d.view_as(y)) * y * (1 - y)  # (B, K)
    grads = []
    for n in range(len(model.layers) - 1, -1, -1):
        y_in = ys[n]
        grads.append((delta.T @ y_in, delta.sum(0)))  # dE/dw_ji, dE/db_j
        if n > 0:
            delta = (delta @ model.layers[n].weight) * y_in * (1 - y_in)  # back through w_ji
    return grads[::-1]
