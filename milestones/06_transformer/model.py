"""The Transformer of "Attention Is All You Need" (Vaswani et al. 2017), names and equations from the paper.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V                                  (eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
    FFN(x) = max(0, x W_1 + b_1) W_2 + b_2                                              (eq. 2)
    PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))   (sec. 3.5)
    each sub-layer: LayerNorm(x + Dropout(Sublayer(x)))                                 (sec. 3.1, 5.4)

Masks are bool tensors broadcastable to (B, h, Tq, Tk) with True = "may attend", the convention of
F.scaled_dot_product_attention's bool attn_mask. `impl="fast"` runs PyTorch's fused kernels (flash /
memory-efficient on a GPU); `impl="scratch"` runs eq. 1 as written. Both use the same weights.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

IMPLS = ("fast", "scratch")
CONFIGS = {"base": dict(d_model=512, n_layers=6, h=8, d_ff=2048, dropout=0.1),  # Table 3
           "big": dict(d_model=1024, n_layers=6, h=16, d_ff=4096, dropout=0.3)}


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """(Tq, Tk) bool: query i (the last Tq of Tk positions) may attend to keys 0 .. Tk - Tq + i."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(t_k - t_q)


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p: float = 0.0, causal: bool = False):
    """Eq. 1. q (B, h, Tq, d_k), k and v (B, h, Tk, d_k) -> output (B, h, Tq, d_k), weights (B, h, Tq, Tk).

    Masked keys get weight exactly 0; a query with no key to attend to gets all-zero weights (output 0).
    `weights` are the softmax before dropout; the output uses the dropped-out weights.
    """
    if causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], q.device) & (True if mask is None else mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # Q K^T / sqrt(d_k): (B, h, Tq, Tk)
    dead = None
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
        dead = ~mask.any(-1, keepdim=True)  # rows with every key masked
        scores = scores.masked_fill(dead, 0.0)  # softmax of a row of -inf would be NaN
    low = scores.dtype in (torch.float16, torch.bfloat16)
    weights = scores.softmax(-1, dtype=torch.float32 if low else None).to(v.dtype)  # float32 statistics
    if dead is not None:
        weights = weights.masked_fill(dead, 0.0)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights  # softmax(...) V: (B, h, Tq, d_k)


def attention(q, k, v, mask=None, dropout_p: float = 0.0, impl: str = "fast", causal: bool = False):
    """Eq. 1 by PyTorch's fused kernel ("fast") or by the function above ("scratch"): (B, h, Tq, d_k)."""
    if impl == "scratch":
        return scaled_dot_product_attention(q, k, v, mask, dropout_p, causal)[0]
    t_q, t_k = q.shape[-2], k.shape[-2]
    if causal and t_q == 1:  # the newest token alone: it may see every key
        causal = False
    if causal and (mask is not None or t_q != t_k):  # is_causal is top-left aligned: build the mask
        mask, causal = causal_mask(t_q, t_k, q.device) & (True if mask is None else mask), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)


class MultiHeadAttention(nn.Module):
    """Sec. 3.2.2: h heads of d_k = d_v = d_model / h. W_Q, W_K, W_V, W_O carry biases: the paper's equations
    have none, common implementations (nn.MultiheadAttention, fairseq, the Annotated Transformer) do.

    `dropout` acts on the attention weights. keep_weights=True computes with the scratch path and keeps the
    last (B, h, Tq, Tk) weights, detached, on `last_weights` (for figures).
    """

    def __init__(self, d_model: int, h: int, dropout: float = 0.1, impl: str = "fast", bias: bool = True):
        super().__init__()
        if d_model % h:
            raise ValueError(f"d_model={d_model} is not divisible by h={h}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.d_model, self.h, self.d_k, self.dropout, self.impl = d_model, h, d_model // h, dropout, impl
        self.W_Q, self.W_K, self.W_V, self.W_O = (nn.Linear(d_model, d_model, bias=bias) for _ in range(4))
        self.keep_weights, self.last_weights = False, None

    def split(self, x):
        """(B, T, d_model) -> (B, h, T, d_k)"""
        return x.view(x.shape[0], x.shape[1], self.h, self.d_k).transpose(1, 2)

    def forward(self, x_q, x_kv, mask=None, cache: dict | None = None, causal: bool = False):
        """x_q (B, Tq, d_model), x_kv (B, Tk, d_model) -> (B, Tq, d_model).

        cache (incremental decoding): the keys and values of earlier calls are kept in cache["k"],
        cache["v"] (B, h, T, d_k) and the new ones appended along time. A cache with cache["static"] = True
        (cross-attention on a fixed memory) projects x_kv once and reuses it on later calls.
        """
        q = self.split(self.W_Q(x_q))  # Q W^Q for every head: (B, h, Tq, d_k)
        if cache is not None and cache.get("static") and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.split(self.W_K(x_kv)), self.split(self.W_V(x_kv))  # (B, h, Tk, d_k)
            if cache is not None:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                cache["k"], cache["v"] = k, v
        p = self.dropout if self.training else 0.0
        if self.keep_weights:
            out, w = scaled_dot_product_attention(q, k, v, mask, p, causal)
            self.last_weights = w.detach()
        else:
            out = attention(q, k, v, mask, p, self.impl, causal)  # (B, h, Tq, d_k)
        out = out.transpose(1, 2).reshape(x_q.shape[0], x_q.shape[1], self.d_model)  # Concat(head_1..h)
        return self.W_O(out)


def sinusoidal_encoding(n_positions: int, d_model: int) -> torch.Tensor:
    """Sec. 3.5: (n_positions, d_model), PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (n, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # 2i: (ceil(d/2),)
    angle = pos / 10000 ** (two_i / d_model)  # (n, ceil(d/2))
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.float()


class PositionwiseFeedForward(nn.Module):
    """Eq. 2: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, the same at every position."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.W_1, self.W_2, self.drop = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model), nn.Dropout(dropout)

    def forward(self, x):
        return self.W_2(self.drop(torch.relu(self.W_1(x))))  # (B, T, d_model); inner dropout off by default


class Sublayer(nn.Module):
    """The residual connection around one sub-layer. norm="post" (the paper, sec. 3.1 and 5.4):
    LayerNorm(x + Dropout(f(x))); norm="pre" (Wang et al. 2019, GPT-2): x + Dropout(f(LayerNorm(x)))."""

    def __init__(self, d_model: int, dropout: float, norm: str):
        super().__init__()
        if norm not in ("post", "pre"):
            raise ValueError(f"norm must be post or pre, got {norm!r}")
        self.norm, self.ln, self.drop = norm, nn.LayerNorm(d_model), nn.Dropout(dropout)

    def forward(self, x, f):
        if self.norm == "post":
            return self.ln(x + self.drop(f(x)))
        return x + self.drop(f(self.ln(x)))


class EncoderLayer(nn.Module):
    """Sec. 3.1: multi-head self-attention, then the feed-forward network, each inside a Sublayer."""

    def __init__(self, d_model, h, d_ff, dropout=0.1, norm="post", impl="fast", attn_dropout=0.0):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, h, attn_dropout, impl)
        self.ffn = PositionwiseFeedForward(d_model, d_ff)
        self.sub1, self.sub2 = Sublayer(d_model, dropout, norm), Sublayer(d_model, dropout, norm)

    def forward(self, x, keep):
        """x (B, S, d_model), keep (B, 1, 1, S) bool: the non-padding source positions."""
        x = self.sub1(x, lambda z: self.self_attn(z, z, keep))
        return self.sub2(x, self.ffn)


class DecoderLayer(nn.Module):
    """Sec. 3.1: masked self-attention, attention over the encoder's output ("memory"), feed-forward."""

    def __init__(self, d_model, h, d_ff, dropout=0.1, norm="post", impl="fast", attn_dropout=0.0):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, h, attn_dropout, impl)
        self.cross_attn = MultiHeadAttention(d_model, h, attn_dropout, impl)
        self.ffn = PositionwiseFeedForward(d_model, d_ff)
        self.sub1, self.sub2, self.sub3 = (Sublayer(d_model, dropout, norm) for _ in range(3))

    def forward(self, y, memory, tgt_keep, src_keep, cache: dict | None = None):
        """y (B, T, d_model), memory (B, S, d_model), tgt_keep (B, 1, 1, T_total), src_keep (B, 1, 1, S)."""
        c_self, c_cross = (None, None) if cache is None else (cache.setdefault("self", {}),
                                                               cache.setdefault("cross", {"static": True}))
        y = self.sub1(y, lambda z: self.self_attn(z, z, tgt_keep, c_self, causal=True))  # no peeking ahead
        y = self.sub2(y, lambda z: self.cross_attn(z, memory, src_keep, c_cross))
        return self.sub3(y, self.ffn)


class Transformer(nn.Module):
    """Encoder-decoder with one embedding shared by source, target and the pre-softmax projection (sec. 3.4).

    Token embeddings are multiplied by sqrt(d_model) and added to the positions (sinusoidal, sec. 3.5, or
    learned, Table 3 row E: one table shared by both stacks), then dropout (sec. 5.4). norm="pre" adds a
    final LayerNorm to each stack. attn_dropout (on the attention weights) is not in the paper: 0 by default.
    """

    def __init__(self, vocab_size: int, d_model: int = 512, n_layers: int = 6, h: int = 8, d_ff: int = 2048,
                 dropout: float = 0.1, norm: str = "post", positions: str = "sinusoidal", max_len: int = 256,
                 pad_id: int = 0, impl: str = "fast", n_encoder_layers: int | None = None,
                 n_decoder_layers: int | None = None, attn_dropout: float = 0.0):
        super().__init__()
        if positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be sinusoidal or learned, got {positions!r}")
        self.d_model, self.pad_id, self.max_len, self.positions = d_model, pad_id, max_len, positions
        self.embed = nn.Embedding(vocab_size, d_model)
        if positions == "learned":
            self.pos_embed = nn.Embedding(max_len, d_model)
        else:
            self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        layer_args = (d_model, h, d_ff, dropout, norm, impl, attn_dropout)
        self.encoder = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(n_encoder_layers or n_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*layer_args) for _ in range(n_decoder_layers or n_layers))
        self.enc_ln = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.dec_ln = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.pre_softmax = nn.Linear(d_model, vocab_size, bias=False)
        self.pre_softmax.weight = self.embed.weight  # sec. 3.4: the same matrix
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform for every weight matrix, zero biases (a common choice: the paper does not say);
        the embedding N(0, d_model^-1/2), so that embedding * sqrt(d_model) has unit variance."""
        for name, p in self.named_parameters():
            if name == "embed.weight":
                nn.init.normal_(p, 0.0, self.d_model ** -0.5)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def embed_positions(self, tokens, start: int = 0):
        """Embedding * sqrt(d_model) + position encoding of positions start .. start + T - 1, then dropout."""
        T = tokens.shape[1]
        if start + T > self.max_len:
            raise ValueError(f"sequence of length {start + T} is longer than max_len={self.max_len}")
        x = self.embed(tokens) * math.sqrt(self.d_model)  # (B, T, d_model)
        pos = self.pos_embed.weight[start:start + T] if self.positions == "learned" else self.pe[start:start + T]
        return self.drop(x + pos.to(x.dtype))

    def encode(self, src):
        """src (B, S) -> memory (B, S, d_model), src_keep (B, 1, 1, S) bool (False at padding)."""
        src_keep = (src != self.pad_id)[:, None, None, :]
        x = self.embed_positions(src)
        for layer in self.encoder:
            x = layer(x, src_keep)
        return self.enc_ln(x), src_keep

    def decode(self, tgt_in, memory, src_keep, cache: dict | None = None):
        """tgt_in (B, T) -> logits (B, T, V). cache (start with {}): keys/values of earlier calls are kept,
        so tgt_in may hold only the newest token(s); positions continue from the cache's length."""
        keep = tgt_in != self.pad_id  # (B, T)
        start = 0
        if cache is not None:
            if "keep" in cache:
                start = cache["keep"].shape[1]
                keep = torch.cat([cache["keep"], keep], 1)
            cache["keep"] = keep
            layers = cache.setdefault("layers", [{} for _ in self.decoder])
        y = self.embed_positions(tgt_in, start)
        for n, layer in enumerate(self.decoder):
            y = layer(y, memory, keep[:, None, None, :], src_keep, None if cache is None else layers[n])
        return self.pre_softmax(self.dec_ln(y))  # (B, T, V)

    def forward(self, src, tgt_in):
        """src (B, S), tgt_in (B, T) (the target shifted right) -> logits (B, T, V)."""
        memory, src_keep = self.encode(src)
        return self.decode(tgt_in, memory, src_keep)

    @staticmethod
    def reorder_cache(cache: dict, index: torch.Tensor) -> dict:
        """Select batch rows `index` of every cached tensor (beam search), in place; returns the cache."""
        cache["keep"] = cache["keep"].index_select(0, index)
        for part in (part for layer in cache.get("layers", []) for part in layer.values()):
            part.update({key: part[key].index_select(0, index) for key in ("k", "v") if key in part})
        return cache


def base_param_count(vocab_size: int, d_model: int = 512, n_layers: int = 6, d_ff: int = 2048,
                     norm: str = "post") -> int:
    """Exact parameter count of Transformer(vocab_size, d_model, n_layers, d_ff=d_ff, norm=norm) with
    sinusoidal positions (the derivation is in NOTES.md). The number of heads does not change it."""
    d = d_model
    attn = 4 * (d * d + d)  # W_Q, W_K, W_V, W_O with biases
    ffn = 2 * d * d_ff + d_ff + d  # W_1, b_1, W_2, b_2
    ln = 2 * d  # gain and bias
    layers = n_layers * ((attn + ffn + 2 * ln) + (2 * attn + ffn + 3 * ln))  # an encoder and a decoder layer
    return vocab_size * d + layers + (2 * ln if norm == "pre" else 0)  # embedding once; pre-LN's final LNs
