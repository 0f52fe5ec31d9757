"""A decoder-only Transformer language model: GPT (Radford et al. 2018) in GPT-2's layout (Radford et al. 2019).

    h_0 = U W_e + W_p                                  token + learned absolute position embeddings (GPT sec. 3.1)
    h_l = block(h_{l-1}),  l = 1 .. n_layer             masked (causal) multi-head self-attention + MLP
    P(u) = softmax(LayerNorm(h_n) W_e^T)               the output projection is the token embedding (tied)

    block (pre-LN, GPT-2 sec. 2.3):  x = x + Dropout(attn(LN_1(x)));  x = x + Dropout(MLP(LN_2(x)))
    MLP: Linear(d, 4d) -> GELU -> Linear(4d, d)

Only the decoder of model.py's Transformer is kept, without its cross-attention: every position attends
to itself and the positions before it, and learns to predict the next token.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import MultiHeadAttention


class MLP(nn.Module):
    """The position-wise feed-forward network with GELU (GPT sec. 4.1), d -> 4d -> d."""

    def __init__(self, d_model: int, dropout: float, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(d_model, 4 * d_model, bias=bias)
        self.c_proj = nn.Linear(4 * d_model, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # (B, T, d)


class Block(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_head: int, dropout: float, bias: bool, impl: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = MultiHeadAttention(d_model, n_head, dropout, impl, bias=bias)  # dropout on the weights
        self.ln_2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, dropout, bias)
        self.drop = nn.Dropout(dropout)  # residual dropout after the attention's output projection

    def forward(self, x, cache: dict | None = None):
        z = self.ln_1(x)
        x = x + self.drop(self.attn(z, z, cache=cache, causal=True))  # (B, T, d)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Defaults are nanoGPT's "baby GPT" for Tiny Shakespeare; GPT-1 itself is n_layer=12, n_head=12,
    d_model=768, context=512, dropout=0.1. bias=False drops the biases of every Linear and LayerNorm."""

    def __init__(self, vocab_size: int, context: int = 256, n_layer: int = 6, n_head: int = 6, d_model: int = 384,
                 dropout: float = 0.2, bias: bool = True, impl: str = "fast"):
        super().__init__()
        self.vocab_size, self.context, self.n_layer = vocab_size, context, n_layer
        self.wte = nn.Embedding(vocab_size, d_model)  # W_e
        self.wpe = nn.Embedding(context, d_model)  # W_p
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_head, dropout, bias, impl) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.reset_parameters()

    def reset_parameters(self):
        """GPT-2's init: every weight N(0, 0.02), biases 0; the projections that write into the residual
        stream (attention W_O, MLP c_proj) N(0, 0.02 / sqrt(2 n_layer)), as there are 2 n_layer of them."""
        for name, p in self.named_parameters():
            if name.endswith("W_O.weight") or name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.n_layer))
            elif p.dim() > 1:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:  # LayerNorm gains
                nn.init.ones_(p)

    def new_cache(self) -> list:
        """An empty KV cache: one dict per block (an empty list works too: forward fills it)."""
        return [{} for _ in self.blocks]

    @staticmethod
    def cache_len(cache) -> int:
        return cache[0]["k"].shape[2] if cache and "k" in cache[0] else 0

    def forward(self, idx, cache: list | None = None):
        """idx (B, T) token ids -> logits (B, T, V). With a cache, idx holds only the new tokens: their
        positions continue from the cache's length, and their keys and values are appended to it."""
        start = 0
        if cache is not None:
            if not cache:
                cache.extend({} for _ in self.blocks)
            start = self.cache_len(cache)
        T = idx.shape[1]
        if start + T > self.context:
            raise ValueError(f"{start + T} tokens do not fit the model's context of {self.context}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # h_0 = U W_e + W_p: (B, T, d)
        for n, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[n])
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None):
        """Continue idx (B, T) by max_new_tokens sampled tokens -> (B, T + max_new_tokens).

        temperature 0 (or top_k=1) is greedy. Beyond the context the model sees only the last `context`
        tokens; the cache is then dropped and each step recomputes that window, since every token's absolute
        position shifts. Call model.eval() first (dropout stays as the model's mode says).
        """
        if idx.shape[1] > self.context:
            raise ValueError(f"the prompt has {idx.shape[1]} tokens, more than the model's context of "
                             f"{self.context}")
        if idx.shape[1] == 0:
            raise ValueError("the prompt is empty: give at least one token")
        cache = self.new_cache() if use_cache else None
        fresh = idx  # the tokens the cache has not seen yet
        for _ in range(max_new_tokens):
            if cache is not None and self.cache_len(cache) + fresh.shape[1] <= self.context:
                logits = self(fresh, cache)[:, -1]
            else:
                cache = None
                logits = self(idx[:, -self.context:])[:, -1]  # (B, V)
            nxt = sample(logits, temperature, top_k, generator)  # (B, 1)
            idx, fresh = torch.cat([idx, nxt], 1), nxt
        return idx

    def num_params(self, exclude_positions: bool = False) -> int:
        """Parameters (the tied embedding counted once); nanoGPT reports them without the position table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if exclude_positions else n


def sample(logits, temperature: float = 1.0, top_k: int | None = None, generator=None):
    """logits (B, V) -> (B, 1) next tokens: softmax(logits / temperature) restricted to the top_k largest."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # sampling statistics in float32
    if temperature <= 0 or top_k == 1:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, 1, generator=generator)
