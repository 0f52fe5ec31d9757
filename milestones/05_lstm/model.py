"""Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate: Gers, Schmidhuber & Cummins 2000),
the Elman RNN it was built to beat, and the models the experiments train.

The LSTM cell, one time step (x: input, h: hidden state, c: cell state; sigma = logistic sigmoid):

    i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)       input gate
    f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf)       forget gate (Gers 2000; f_t = 1 in the 1997 cell)
    g_t = tanh (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)       cell input ("candidate")
    o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho)       output gate
    c_t = f_t * c_{t-1} + i_t * g_t                          the memory: updated by ADDING, not by a matrix
    h_t = o_t * tanh(c_t)

Because c_t depends on c_{t-1} through a multiplication by f_t only, dc_t/dc_{t-1} = f_t: the gradient
along the cell state is not squashed by a weight matrix and a tanh' at every step (the "constant error
carousel" when f = 1). The Elman RNN,  h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  multiplies the
gradient by W_hh^T diag(tanh') at each step, which shrinks it geometrically: vanishing gradients.

Weights are laid out as PyTorch's nn.LSTM lays them out (gate order i, f, g, o; two bias vectors b_ih and
b_hh whose SUM is the bias of each equation), so the same numbers run through either implementation.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------------------
# Cells, written from the equations
# ---------------------------------------------------------------------------------------------------------

class LSTMCell(nn.Module):
    """One LSTM layer's step. forget_gate=False gives the 1997 cell: three gate blocks (i, g, o), c_t = c_{t-1} + i g."""

    def __init__(self, input_size: int, hidden_size: int, forget_gate: bool = True):
        super().__init__()
        self.input_size, self.hidden_size, self.forget_gate = input_size, hidden_size, forget_gate
        n = 4 if forget_gate else 3
        self.weight_ih = nn.Parameter(torch.empty(n * hidden_size, input_size))  # rows: i, f, g, o
        self.weight_hh = nn.Parameter(torch.empty(n * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(n * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(n * hidden_size))
        bound = 1 / math.sqrt(hidden_size)  # PyTorch's default, so both implementations start alike
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_part(self, x: torch.Tensor) -> torch.Tensor:
        """W_ih x + b_ih for all time steps at once (one big matmul instead of T small ones): (B, T, nH)."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, wx: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wx: (B, nH) = W_ih x_t + b_ih;  h, c: (B, H)  ->  h_t, c_t."""
        gates = wx + F.linear(h, self.weight_hh, self.bias_hh)  # (B, nH)
        if self.forget_gate:
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # c_t = f c_{t-1} + i g
        else:
            i, g, o = gates.chunk(3, dim=1)
            c = c + torch.sigmoid(i) * torch.tanh(g)  # c_t = c_{t-1} + i g  (1997: no forget gate)
        h = torch.sigmoid(o) * torch.tanh(c)  # h_t = o tanh(c_t)
        return h, c


class RNNCell(nn.Module):
    """Elman (1990): h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    forget_gate = False

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_part(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (B, T, H)

    def step(self, wx, h, c=None):
        return torch.tanh(wx + F.linear(h, self.weight_hh, self.bias_hh)), None


def fp32_under_autocast(device_type: str) -> bool:
    """Whether nn.LSTM / nn.RNN must leave autocast: on CUDA, autocast runs cuDNN's recurrent kernels in fp16
    whatever dtype was asked, and a bf16 run does not loss-scale. There they run in fp32 (TF32 tensor cores)
    instead; a CPU runs them in bf16 as asked, and fp16 runs have their GradScaler."""
    return (device_type == "cuda" and torch.is_autocast_enabled(device_type)
            and torch.get_autocast_dtype(device_type) == torch.bfloat16)


class Recurrent(nn.Module):
    """A stack of recurrent layers over a (B, T, C) sequence, batch first.

    kind: "lstm" or "rnn".  impl: "torch" runs nn.LSTM / nn.RNN (cuDNN on a GPU, fused kernels on CPU);
    "scratch" runs the cells above step by step in Python. Both hold the same weights under the same names
    (weight_ih_l0, ...), so a checkpoint trained with one loads into the other. dropout acts between layers
    (on the output of every layer but the last), never on the recurrent h_{t-1} -> h_t path.
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 impl: str = "torch", forget_gate: bool = True):
        super().__init__()
        if kind not in ("lstm", "rnn"):
            raise ValueError(f"kind must be lstm or rnn, got {kind!r}")
        if impl not in ("torch", "scratch"):
            raise ValueError(f"impl must be torch or scratch, got {impl!r}")
        self.kind, self.impl, self.num_layers, self.dropout = kind, impl, num_layers, dropout
        self.hidden_size, self.forget_gate = hidden_size, forget_gate and kind == "lstm"
        # the 1997 cell keeps its own 3H-row parameters either way; "torch" runs them through nn.LSTM's kernel
        self.pinned_forget_gate = impl == "torch" and kind == "lstm" and not forget_gate
        if self.in_torch_module:
            cls = nn.LSTM if kind == "lstm" else nn.RNN
            self.net = cls(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
        else:
            sizes = [input_size] + [hidden_size] * (num_layers - 1)
            make = (lambda a: LSTMCell(a, hidden_size, forget_gate)) if kind == "lstm" else \
                (lambda a: RNNCell(a, hidden_size))
            self.cells = nn.ModuleList(make(a) for a in sizes)

    @property
    def in_torch_module(self) -> bool:
        """Whether the weights live in nn.LSTM / nn.RNN (`net`, names weight_ih_l0, ...) rather than in our cells
        (`cells`): impl "torch", except the 1997 cell, which keeps its cells' parameters."""
        return self.impl == "torch" and not self.pinned_forget_gate

    def layer_params(self, layer: int) -> dict:
        """{'weight_ih': ..., 'weight_hh': ..., 'bias_ih': ..., 'bias_hh': ...} of one layer."""
        if self.in_torch_module:
            return {k: getattr(self.net, f"{k}_l{layer}") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        cell = self.cells[layer]
        return {k: getattr(cell, k) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}

    def init_state(self, batch_size: int, device=None):
        z = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)
        return (z, z.clone()) if self.kind == "lstm" else z

    def forward(self, x: torch.Tensor, state=None):
        """x: (B, T, C) -> outputs of the last layer (B, T, H), final state (h, c) each (L, B, H) (h alone for rnn)."""
        if self.impl == "torch":
            run = self.lstm_1997 if self.pinned_forget_gate else self.net
            if fp32_under_autocast(x.device.type):
                with torch.autocast(x.device.type, enabled=False):
                    state = None if state is None else \
                        (tuple(s.float() for s in state) if isinstance(state, tuple) else state.float())
                    return run(x.float(), state)
            return run(x, state)
        B, T, _ = x.shape
        if state is None:
            state = self.init_state(B, x.device)
        hs, cs = (state if self.kind == "lstm" else (state, None))
        h_out, c_out = [], []
        for n, cell in enumerate(self.cells):
            if n > 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)  # between layers only
            wx = cell.input_part(x)  # (B, T, nH)
            h, c = hs[n].to(wx.dtype), (cs[n].to(wx.dtype) if cs is not None else None)
            ys = []
            for t in range(T):
                h, c = cell.step(wx[:, t], h, c)
                ys.append(h)
            x = torch.stack(ys, dim=1)  # (B, T, H)
            h_out.append(h)
            c_out.append(c)
        final = (torch.stack(h_out), torch.stack(c_out)) if self.kind == "lstm" else torch.stack(h_out)
        return x, final

    def lstm_1997(self, x: torch.Tensor, state=None):
        """The 1997 cell through nn.LSTM's kernel (C++ on a CPU, cuDNN on a GPU) instead of a Python loop over t.

        Each layer's i, g, o rows are the cell's own parameters; the kernel's forget-gate rows get zero weights
        and a bias of 100, so f = sigmoid(100) rounds to exactly 1.0 (fp32 and bf16) and c_t = c_{t-1} + i g, as
        in LSTMCell(forget_gate=False). Its gradient y (1 - y) is then exactly 0: nothing to learn there.
        x: (B, T, C) -> (B, T, H), ((L, B, H), (L, B, H))."""
        def with_f(p, fill):  # (3H, ...) rows i, g, o -> (4H, ...) rows i, f, g, o
            i, g, o = p.chunk(3, dim=0)
            return torch.cat([i, torch.full_like(i, fill), g, o])

        weights = []
        for cell in self.cells:
            weights += [with_f(cell.weight_ih, 0.0), with_f(cell.weight_hh, 0.0), with_f(cell.bias_ih, 100.0),
                        with_f(cell.bias_hh, 0.0)]
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        state = tuple(s.to(x.dtype) for s in state)
        # nn.LSTM.forward's own call, with our weights: (input, hx, params, has_biases, num_layers, dropout,
        # train, bidirectional, batch_first)
        y, h, c = torch._VF.lstm(x, state, weights, True, self.num_layers, self.dropout, self.training, False, True)
        return y, (h, c)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Either layout loads into either implementation: net.weight_ih_l1 <-> cells.1.weight_ih."""
        for key in list(state_dict):
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            if not self.in_torch_module and rest.startswith("net."):  # net.weight_ih_l1 -> cells.1.weight_ih
                name, layer = rest[4:].rsplit("_l", 1)
                state_dict[f"{prefix}cells.{layer}.{name}"] = state_dict.pop(key)
            elif self.in_torch_module and rest.startswith("cells."):  # cells.1.weight_ih -> net.weight_ih_l1
                _, layer, name = rest.split(".")
                state_dict[f"{prefix}net.{name}_l{layer}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)



def set_forget_bias(rnn: Recurrent, value: float) -> None:
    """Make the forget gate's total bias b_if + b_hf equal `value` (b_if = value, b_hf = 0).

    nn.LSTM keeps two bias vectors per layer and adds them; setting only one of them to `value` would leave
    the other's random init on top. A positive value (1 is usual since Jozefowicz et al. 2015)
    starts every cell remembering: f = sigma(1) ~ 0.73 instead of sigma(0) = 0.5.
    """
    if not rnn.forget_gate:
        raise ValueError("this network has no forget gate (Elman RNN or the 1997 LSTM cell)")
    H = rnn.hidden_size
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            p = rnn.layer_params(layer)
            p["bias_ih"][H:2 * H].fill_(value)  # rows H..2H are the forget gate (order i, f, g, o)
            p["bias_hh"][H:2 * H].zero_()


# ---------------------------------------------------------------------------------------------------------
# The experiments' models
# ---------------------------------------------------------------------------------------------------------

class SequenceRegressor(nn.Module):
    """The adding problem's network: a recurrent layer read out once, at the sequence's last step."""

    def __init__(self, kind: str, hidden_size: int, input_size: int = 2, impl: str = "torch",
                 forget_gate: bool = True):
        super().__init__()
        self.rnn = Recurrent(kind, input_size, hidden_size, 1, impl=impl, forget_gate=forget_gate)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)  # (B, T, H)
        return self.out(y[:, -1]).squeeze(-1)  # (B,)


class LanguageModel(nn.Module):
    """Embedding -> stacked LSTM (or RNN) -> linear decoder over the vocabulary (Zaremba et al. 2014).

    Dropout (Zaremba's placement) is applied to the embedding output, between LSTM layers and to the last
    layer's output before the decoder: every non-recurrent connection, none of the recurrent ones.
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 2, dropout: float = 0.0,
                 kind: str = "lstm", impl: str = "torch", forget_gate: bool = True, init_range: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.rnn = Recurrent(kind, hidden_size, hidden_size, num_layers, dropout, impl, forget_gate)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if init_range > 0:  # Zaremba: every parameter uniform in [-r, r]
            for p in self.parameters():
                nn.init.uniform_(p, -init_range, init_range)

    def forward(self, tokens: torch.Tensor, state=None):
        """tokens (B, T) int -> logits (B, T, V), final recurrent state."""
        x = self.drop(self.embed(tokens))  # (B, T, H)
        y, state = self.rnn(x, state)  # (B, T, H)
        return self.decoder(self.drop(y)), state


def detach_state(state):
    """Truncated BPTT: keep the state's values, cut the graph to the previous batch."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def state_list(state) -> list:
    """The recurrent state as a list of tensors ([h, c] for an LSTM, [h] for an RNN, [] for none)."""
    if state is None:
        return []
    return list(state) if isinstance(state, tuple) else [state]


def state_from_list(tensors: list, kind: str):
    """The inverse of state_list."""
    if not tensors:
        return None
    return tuple(tensors) if kind == "lstm" else tensors[0]
