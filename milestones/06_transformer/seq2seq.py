"""The translation recipe's pieces, shared by train.py's translate and copy experiments and vs_rnn.py: the
paper's learning rate (eq. 3), the Transformer from a config, the config's checks, token-count batches held in
memory, and the validation loss."""

import math

import torch
import torch.nn.functional as F

from common.errors import UserError

from . import data
from .model import Transformer


def rate(step: int, d_model: int, warmup: int) -> float:
    """Eq. 3: lrate = d_model^-0.5 * min(step_num^-0.5, step_num * warmup_steps^-1.5), step_num from 1."""
    return d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def transformer_from(cfg: dict, vocab_size: int, max_len: int) -> Transformer:
    """The Transformer a run's config describes (dropout as trained; the caller sets eval mode)."""
    return Transformer(vocab_size, cfg["d_model"], cfg["layers"], cfg["heads"], cfg["d_ff"], cfg["dropout"],
                       cfg["norm"], cfg["positions"], max_len, data.PAD, cfg["impl"],
                       n_decoder_layers=cfg["decoder_layers"] or None)


def check_seq2seq(cfg) -> None:
    """The Transformer's shape and regularisation flags, each a one-line error when out of range."""
    for name in ("layers", "d_model", "heads", "d_ff", "warmup"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.heads:
        raise UserError(f"--d-model {cfg.d_model} is not divisible by --heads {cfg.heads}")
    if not 0 <= cfg.dropout < 1 or not 0 <= cfg.label_smoothing < 1:
        raise UserError("--dropout and --label-smoothing must be in [0, 1)")


class Pairs:
    """A split held in memory as (src, tgt) id tensors, batched by token count (sec. 5.1)."""

    def __init__(self, ds, max_tokens: int, rt, shuffle: bool, seed: int = 0):
        self.rows = data.pairs(ds)
        self.batcher = data.TokenBatches(ds["src_len"][:], ds["tgt_len"][:], max_tokens, shuffle=shuffle,
                                         seed=seed, rank=rt.rank, world_size=rt.world_size)
        self.device = rt.device

    def __len__(self) -> int:
        return len(self.batcher)

    def batches(self, epoch: int = 0, start: int = 0):
        """(src (B, S), tgt_in (B, T), tgt_out (B, T)) on the device, and the batch's real tokens (both sides)."""
        for idx in self.batcher.batches(epoch, start):
            src, tgt_in, tgt_out = data.collate([self.rows[i] for i in idx], data.PAD)
            tokens = int((src != data.PAD).sum() + (tgt_out != data.PAD).sum())  # counted on the CPU: no sync
            yield (*(t.to(self.device, non_blocking=True) for t in (src, tgt_in, tgt_out)), tokens)


@torch.no_grad()
def evaluate_nll(net, split: Pairs, rt) -> dict:
    """Mean negative log-likelihood per target token (no label smoothing) under teacher forcing."""
    net.eval()
    totals = torch.zeros(2, device=rt.device, dtype=torch.float64)  # NLL sum, target tokens
    for src, tgt_in, tgt_out, _ in split.batches():
        with rt.autocast():
            logits = net(src, tgt_in)
        totals[0] += F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=data.PAD,
                                     reduction="sum")
        totals[1] += (tgt_out != data.PAD).sum()
    rt.all_reduce_sum(totals)
    net.train()
    nll = float(totals[0] / totals[1])
    return {"loss": nll, "perplexity": math.exp(min(nll, 50.0))}
