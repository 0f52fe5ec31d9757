"""The translation recipe's pieces, shared by train.py's translate and copy experiments, vs_rnn.py and
ablations.py: the paper's learning rate (eq. 3), the Transformer from a config, the config's checks, token-count
batches held in memory, the validation loss, the training loop they all run, and for the comparisons one arm's
training and BLEU."""

import math
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from common.errors import UserError
from common.loop import optimizer_step
from common.session import Session

from . import data, decode
from .budget import Budget
from .model import Transformer


def rate(step: int, d_model: int, warmup: int) -> float:
    """Eq. 3: lrate = d_model^-0.5 * min(step_num^-0.5, step_num * warmup_steps^-1.5), step_num from 1."""
    return d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def rate_without_warmup(step: int, d_model: int, warmup: int) -> float:
    """Eq. 3 with the ramp removed: its peak rate from the first step, then its step^-0.5 decay (the ablations'
    "no warm-up" arms: the same rates as eq. 3 after step `warmup`, the peak before it)."""
    return rate(max(step, warmup), d_model, warmup)


def paper_optimizer(model, cfg, schedule=rate):
    """(optimiser, scheduler) of sec. 5.3: Adam(0.9, 0.98, 1e-9) at --lr times `schedule` (eq. 3 unless given) of
    step_num = step + 1."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s + 1, cfg.d_model, cfg.warmup))
    return opt, sched


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

    def __init__(self, ds, max_tokens: int, rt, shuffle: bool, seed: int = 0, count: str = "padded"):
        self.rows = data.pairs(ds)
        self.batcher = data.TokenBatches(ds["src_len"][:], ds["tgt_len"][:], max_tokens, shuffle=shuffle,
                                         seed=seed, rank=rt.rank, world_size=rt.world_size, count=count)
        self.device = rt.device

    def __len__(self) -> int:
        return len(self.batcher)

    def batches(self, epoch: int = 0, start: int = 0):
        """(src (B, S), tgt_in (B, T), tgt_out (B, T)) on the device, and the batch's real tokens (both sides)."""
        for idx in self.batcher.batches(epoch, start):
            src, tgt_in, tgt_out = data.collate([self.rows[i] for i in idx], data.PAD)
            tokens = int((src != data.PAD).sum() + (tgt_out != data.PAD).sum())  # counted on the CPU: no sync
            yield (*data.dynamic_shapes(*(t.to(self.device, non_blocking=True) for t in (src, tgt_in, tgt_out))),
                   tokens)


def comparison_data(cfg, rt, scored: str) -> SimpleNamespace:
    """Multi30k for a comparison's arms (vs_rnn, ablations): the tokenizer, the training pairs in one shuffled
    order for every arm, the validation pairs, the positions the decoder may need (the longest sentence + 50
    tokens), and the first --test-size sentences of the `scored` split as source ids and raw references."""
    splits = data.load_multi30k(cfg.data_dir, cfg.vocab_size, cfg.max_len or None)
    longest = max(int(splits[s][c][:].max()) for s in ("train", "val", "test") for c in ("src_len", "tgt_len"))
    sources, references = splits["raw"][scored]
    n = min(cfg.test_size or len(sources), len(sources))
    return SimpleNamespace(
        tok=splits["tokenizer"], positions=longest + decode.EXTRA_LENGTH + 1,
        train=Pairs(splits["train"], cfg.batch_tokens, rt, shuffle=True, seed=cfg.seed, count=cfg.batching),
        valid=Pairs(splits["val"], cfg.batch_tokens, rt, shuffle=False, count=cfg.batching),
        ids=[row["src"] for row in splits[scored].select(range(n))], references=references[:n], n=n,
        complete=n == len(sources))


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


def train_loop(sess: Session, cfg, rt, model, train: Pairs, valid: Pairs, opt, sched, scaler, clip: float,
               budget: Budget = None, keep=None) -> int:
    """The translation loop every experiment runs: token-count batches, label-smoothed cross-entropy per target
    token, the optimiser and eq. 3's schedule stepped, the validation NLL at each eval point. With a `budget` the
    training seconds it counts end the run; with `keep` (train.KeptWeights) the weights at each checkpoint step
    are kept for averaging. Returns the real tokens trained on, summed over ranks."""
    net = rt.wrap(model, compile=cfg.compile)
    seen = 0
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for src, tgt_in, tgt_out, tokens in train.batches(epoch, start):
                if budget is not None:
                    budget.start()
                with rt.autocast():
                    logits = net(src, tgt_in)  # (B, T, V)
                loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=data.PAD,
                                       label_smoothing=cfg.label_smoothing)  # per target token
                optimizer_step(loss, opt, scaler, clip, model.parameters())
                sched.step()
                if budget is not None:
                    budget.stop(sess.step_count + 1)
                if keep is not None:
                    keep.add(model, sess.step_count + 1)  # before the session counts the step, which may end the run
                seen += tokens * rt.world_size
                # with a seconds budget, the step that spends it is the last
                sess.step(tokens * rt.world_size, spent=budget.spent() if budget is not None else None)
                if sess.due("log"):
                    spent = dict(budget_seconds_spent=round(budget.used, 2)) if budget is not None else {}
                    sess.log("train", loss=loss, lr=sched.get_last_lr()[0], **spent)
                if sess.due("eval"):
                    sess.log("valid", **evaluate_nll(net, valid, rt))
                if not sess.running:
                    break
    return seen


def fit(arm: str, cfg, rt, run, train: Pairs, valid: Pairs, model, opt, sched, clip: float,
        experiment: str):
    """Train one arm of a comparison (vs_rnn, ablations) into checkpoint-<arm>.pt until its budget (or --steps)
    is spent; returns (session, training seconds on the clock, real tokens trained on)."""
    total = cfg.steps or (None if cfg.budget_seconds else cfg.epochs * len(train))
    sess = Session(cfg, rt, run, total, len(train), checkpoint=run.dir / f"checkpoint-{arm}.pt",
                   tag={"model": arm}, desc=f"06_transformer {experiment} {arm}", unit="tokens",
                   budget_seconds=cfg.budget_seconds)
    scaler = rt.grad_scaler()
    sess.attach(model, opt, sched, scaler, resume=False)
    budget = Budget(cfg.budget_seconds, total, 0, rt.device)
    seen = train_loop(sess, cfg, rt, model, train, valid, opt, sched, scaler, clip, budget=budget)
    return sess, budget.used, seen


def score(arm: str, model, test_ids, references, tok, cfg, rt, run_dir) -> dict:
    """Beam-search the test sources, detokenise, and compute sacreBLEU (cased; lowercased beside it)."""
    t0 = time.time()
    with rt.autocast():
        hyps = decode.translate(model, test_ids, data.BOS, data.EOS, data.PAD, cfg.beam, cfg.alpha)
    seconds = time.time() - t0
    translations = [data.decode_ids(tok, h) for h in hyps]
    cased, lower = decode.bleu(translations, references), decode.bleu(translations, references, True)
    if rt.is_main:
        (run_dir / f"translations-{arm}.txt").write_text("".join(t.replace("\n", " ") + "\n" for t in translations))
    return dict(bleu=cased["score"], bleu_lowercase=lower["score"], signature=cased["signature"],
                decode_seconds=round(seconds, 1))
