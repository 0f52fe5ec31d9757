"""Before the Transformer: an LSTM encoder-decoder (Sutskever, Vinyals & Le 2014) with the additive attention
of Bahdanau, Cho & Bengio 2014 ("RNNsearch"), the attention the Transformer generalised.

Bahdanau et al., sec. 3 and appendix A (x: source, y: target, i: target position, j: source position):

    h_j = [->h_j ; <-h_j]                          the annotation of source token j: a bidirectional RNN (sec. 3.2)
    e_ij = a(s_{i-1}, h_j) = v_a^T tanh(W_a s_{i-1} + U_a h_j)     the alignment model (eq. 6, appendix A.1.2)
    alpha_ij = exp(e_ij) / sum_k exp(e_ik)         how much target token i looks at source token j (eq. 6)
    c_i = sum_j alpha_ij h_j                       the context vector (eq. 5)
    s_i = f(s_{i-1}, y_{i-1}, c_i)                 the decoder's state (eq. 4)
    p(y_i | y_<i, x) = g(y_{i-1}, s_i, c_i)        the output (eq. 4)
    s_0 = tanh(W_s <-h_1)                          the first state, from the backward encoder (appendix A.2.2)

Here f is 05's LSTM cell stepped on [E y_{i-1}; c_i] (Sutskever's units; Bahdanau's are gated units without a
memory cell), and g is the appendix's deep output: t~_i = U_o s_i + V_o E y_{i-1} + C_o c_i, a maxout over
pairs of units, then W_o t_i. The appendix writes s_{i-1} in t~_i where eq. 4 writes s_i; we follow eq. 4.
Padding gets alpha_ij = 0 exactly (e_ij = -inf before the softmax). Compared with the Transformer's
attention: the score is a small network rather than a dot product, there is one "head", the query is the
decoder's previous state, and the decoder still reads the target one token at a time.

The interface is the Transformer's (model.py), so decode.py's greedy and beam search and the translate loop's
scoring run on it unchanged:

    memory, src_keep = model.encode(src)                     # (B, S, 2n + n'), (B, S) bool
    logits = model.decode(tgt_in, memory, src_keep, cache)   # (B, T, V); the cache carries (s, LSTM cell)
"""

import importlib

import torch
import torch.nn as nn
import torch.nn.functional as F

# 05's LSTM, reused as is (a documented reuse, DESIGN.md): its Recurrent layer runs the encoder over whole
# sequences (nn.LSTM's fused kernels with impl="torch"), its LSTMCell steps the decoder one token at a time
_lstm = importlib.import_module("milestones.05_lstm.model")
Recurrent, LSTMCell = _lstm.Recurrent, _lstm.LSTMCell


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first lengths[b] positions, leaving its padding where it is: (B, S, C) -> (B, S, C).
    Its own inverse. The backward RNN reads the reversed rows, so it starts at each sentence's last token."""
    S = x.shape[1]
    t = torch.arange(S, device=x.device)[None, :]  # (1, S)
    n = lengths[:, None]  # (B, 1)
    index = torch.where(t < n, n - 1 - t, t)  # (B, S)
    return x.gather(1, index[:, :, None].expand_as(x))


class RNNSearch(nn.Module):
    """Bidirectional LSTM encoder, additive attention, LSTM decoder with a maxout deep output.

    m: embedding size, n: hidden size of each encoder direction and of the decoder, n_align: n' of the
    alignment model, l: maxout units of the deep output (Bahdanau et al.: m 620, n 1000, n' 1000, l 500)."""

    def __init__(self, vocab_size: int, m: int = 256, n: int = 256, n_align: int = None, l: int = None,
                 dropout: float = 0.1, pad_id: int = 0, impl: str = "torch"):
        super().__init__()
        n_align, l = n_align or n, l or m
        self.m, self.n, self.n_align, self.pad_id = m, n, n_align, pad_id
        self.src_embed = nn.Embedding(vocab_size, m)  # E_x
        self.tgt_embed = nn.Embedding(vocab_size, m)  # E (of the target words)
        self.drop = nn.Dropout(dropout)
        self.forward_rnn = Recurrent("lstm", m, n, impl=impl)  # ->h_j
        self.backward_rnn = Recurrent("lstm", m, n, impl=impl)  # <-h_j, on the reversed sentence
        self.W_s = nn.Linear(n, n)  # s_0 = tanh(W_s <-h_1)
        self.W_a = nn.Linear(n, n_align, bias=False)  # alignment model: W_a s_{i-1}
        self.U_a = nn.Linear(2 * n, n_align, bias=False)  # U_a h_j
        self.v_a = nn.Linear(n_align, 1, bias=False)  # v_a^T tanh(...)
        self.cell = LSTMCell(m + 2 * n, n)  # f: one step on [E y_{i-1}; c_i]
        self.readout = nn.Linear(n + m + 2 * n, 2 * l)  # t~_i = U_o s_i + V_o E y_{i-1} + C_o c_i (+ bias)
        self.W_o = nn.Linear(l, vocab_size)  # p(y_i) = softmax(W_o t_i)

    # ---- encoder ------------------------------------------------------------------------------------------
    def encode(self, src: torch.Tensor):
        """src (B, S) -> memory (B, S, 2n + n'): the annotations h_j beside U_a h_j, which does not depend on i
        and is computed once per sentence (appendix A.1.2); src_keep (B, S) bool, False at padding."""
        keep = src != self.pad_id  # (B, S)
        lengths = keep.sum(1)  # (B,); padding comes after the sentence
        x = self.drop(self.src_embed(src))  # (B, S, m)
        fwd, _ = self.forward_rnn(x)  # (B, S, n); a position never sees the padding after it
        bwd, _ = self.backward_rnn(reverse_padded(x, lengths))
        h = torch.cat([fwd, reverse_padded(bwd, lengths)], -1)  # (B, S, 2n): h_j = [->h_j ; <-h_j]
        return torch.cat([h, self.U_a(h)], -1), keep  # (B, S, 2n + n')

    def split_memory(self, memory: torch.Tensor):
        return memory.split([2 * self.n, self.n_align], -1)  # h (B, S, 2n), U_a h (B, S, n')

    def initial_state(self, h: torch.Tensor):
        """s_0 = tanh(W_s <-h_1) (appendix A.2.2) and a zero LSTM memory cell: (B, n) each."""
        s = torch.tanh(self.W_s(h[:, 0, self.n:]))  # <-h_1: the backward RNN after reading the whole sentence
        return s, torch.zeros_like(s)

    # ---- attention -----------------------------------------------------------------------------------------
    def attend(self, s_prev: torch.Tensor, h: torch.Tensor, Uh: torch.Tensor, keep: torch.Tensor):
        """s_prev (B, n), h (B, S, 2n), U_a h (B, S, n'), keep (B, S) -> c_i (B, 2n), alpha_i (B, S)."""
        e = self.v_a(torch.tanh(self.W_a(s_prev)[:, None] + Uh)).squeeze(-1)  # e_ij (B, S), eq. 6
        alpha = torch.softmax(e.masked_fill(~keep, float("-inf")), dim=-1)  # 0 at padding, rows sum to 1
        c = torch.bmm(alpha[:, None].to(h.dtype), h).squeeze(1)  # c_i = sum_j alpha_ij h_j (eq. 5)
        return c, alpha

    # ---- decoder -------------------------------------------------------------------------------------------
    def steps(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_keep: torch.Tensor, cache: dict = None):
        """tgt_in (B, T) -> logits (B, T, V), alpha (B, T, S). Starts from s_0, or from the cache's state (which
        then holds the state after the last token), stepping the decoder once per target token."""
        h, Uh = self.split_memory(memory)
        if cache is not None and "s" in cache:
            s, cell = cache["s"], cache["cell"]
        else:
            s, cell = self.initial_state(h)
        Ey = self.drop(self.tgt_embed(tgt_in))  # (B, T, m): E y_{i-1}
        W_y, W_c = self.cell.weight_ih.split([self.m, 2 * self.n], 1)  # the cell's input weights, by input
        wy = F.linear(Ey, W_y, self.cell.bias_ih)  # (B, T, 4n): the y_{i-1} part of every step at once
        states, contexts, alphas = [], [], []
        for i in range(tgt_in.shape[1]):
            c, alpha = self.attend(s, h, Uh, src_keep)  # c_i from s_{i-1}
            s, cell = self.cell.step(wy[:, i] + F.linear(c, W_c), s, cell)  # s_i = f(s_{i-1}, y_{i-1}, c_i)
            states.append(s)
            contexts.append(c)
            alphas.append(alpha)
        if cache is not None:
            cache.update(s=s, cell=cell)
        t = self.readout(torch.cat([torch.stack(states, 1), Ey, torch.stack(contexts, 1)], -1))  # (B, T, 2l)
        t = t.unflatten(-1, (-1, 2)).amax(-1)  # maxout: t_i,k = max(t~_i,2k-1, t~_i,2k)   (B, T, l)
        return self.W_o(self.drop(t)), torch.stack(alphas, 1)  # (B, T, V), (B, T, S)

    def decode(self, tgt_in, memory, src_keep, cache: dict = None):
        """tgt_in (B, T) -> logits (B, T, V). With a cache (start with {}), tgt_in holds only the new token(s)."""
        return self.steps(tgt_in, memory, src_keep, cache)[0]

    def forward(self, src, tgt_in):
        """src (B, S), tgt_in (B, T) (the target shifted right) -> logits (B, T, V)."""
        return self.decode(tgt_in, *self.encode(src))

    @staticmethod
    def reorder_cache(cache: dict, index: torch.Tensor) -> dict:
        """Keep rows `index` of the cached decoder state (beam search), in place; returns the cache."""
        for key in ("s", "cell"):
            if key in cache:
                cache[key] = cache[key].index_select(0, index)
        return cache
