"""Attention vs recurrence, measured: 06's GPT against 05's LSTM language model on Tiny Shakespeare characters,
at (nearly) equal parameter count and equal training budget.

    python -m milestones train 06_transformer --experiment vs_lstm --preset quick --threads 1

The paper's case for dropping recurrence (Vaswani et al. 2017, sec. 4) is parallelism: an LSTM computes its T
states one after another, a self-attention layer computes all T positions in one matrix product. Here both
nets learn the same text from the same batches (step s of either arm sees the same random windows), with the
same optimiser and schedule (AdamW, warm-up, cosine) and each its own peak rate, and each trains until it has
spent --budget-seconds of training (CPU seconds of this process on a CPU, GPU seconds on a GPU; evaluation not
counted), or for --steps steps when the budget is 0. Both are scored on the same validation windows, each window
read on its own (the LSTM from a zero state), so both predict every character from at most --context before it.

Into one run directory:
    metrics.jsonl          training loss and validation loss of each net (rows tagged "model")
    vs_lstm.png            validation loss against training seconds, both nets
    summary.json           each net's parameters, tokens/s, final validation loss and curve
    checkpoint-<net>.pt    each trained net
"""

import dataclasses
import importlib
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import data as corpora
from common.device import count_params
from common.errors import UserError
from common.loop import evaluate_lm, optimizer_step
from common.plot import line_plot
from common.session import Session, open_run

from .budget import Budget
from .charlm import gpt_from, lr_factor, make_adamw, tiled, windows
from .lr import lr_line, lr_record

# A documented reuse across milestones (docs/DESIGN.md): the recurrent arm is 05's LSTM language model, as is
LanguageModel = importlib.import_module("milestones.05_lstm.model").LanguageModel

MILESTONE = "06_transformer"
DATASET = "Tiny Shakespeare (last 10% = validation)"
INIT_RANGE = 0.08  # the LSTM's weights uniform in +-0.08: char-rnn's init, as 05's shakespeare presets


def lstm_lm_params(vocab: int, hidden: int, layers: int) -> int:
    """Parameters of 05's LanguageModel: embedding V H, per layer 4H x (H + H) weights and two 4H biases,
    decoder H V + V."""
    return vocab * hidden + layers * (8 * hidden * hidden + 8 * hidden) + hidden * vocab + vocab


def matched_hidden(target: int, vocab: int, layers: int) -> int:
    """The LSTM width whose parameter count is closest to `target`."""
    h = 1
    while lstm_lm_params(vocab, h + 1, layers) < target:
        h += 1
    return min((h, h + 1), key=lambda n: abs(lstm_lm_params(vocab, n, layers) - target))


class Windowed(nn.Module):
    """The LSTM LM read as the GPT is: each window on its own, from a zero state; logits (B, T, V) only."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, x):
        return self.lm(x)[0]  # (B, T, V); the final state is dropped


def train_arm(cfg, rt, run, name: str, model: nn.Module, read: nn.Module, lr: float, text: torch.Tensor,
              val: list) -> dict:
    """Train `model` on `text` until its budget is spent; `read(x)` gives its logits (B, T, V). Returns its
    card, validation curve and throughput."""
    total = cfg.steps or (None if cfg.budget_seconds else cfg.epochs * len(text) // (cfg.batch_size * cfg.context))
    budget = Budget(cfg.budget_seconds, total, cfg.warmup, rt.device)
    opt = make_adamw(model, dataclasses.replace(cfg, lr=lr), rt.device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, budget.done(s)))
    scaler = rt.grad_scaler()
    steps_per_epoch = max(1, len(text) // (cfg.batch_size * cfg.context))
    sess = Session(cfg, rt, run, total, steps_per_epoch, checkpoint=run.dir / f"checkpoint-{name}.pt",
                   tag={"model": name}, desc=f"{MILESTONE} {name}", unit="tokens", budget_seconds=cfg.budget_seconds)
    sess.attach(model, opt, sched, scaler, resume=False)
    net = rt.wrap(read, compile=cfg.compile)
    load = [os.getloadavg()[0]]
    curve = [dict(step=0, seconds=0.0, wall_seconds=0.0, val_loss=evaluate_lm(net, val, rt))]  # before training
    run.log(0, "valid", epoch=0.0, loss=curve[0]["val_loss"], seconds=0.0, model=name)
    tokens = cfg.batch_size * cfg.context
    with sess:
        while sess.running:
            budget.start()
            seed = (cfg.seed * 1_000_003 + sess.step_count) * 1024 + rt.rank  # as charlm: the same batches per step
            x, y = windows(text, cfg.batch_size // rt.world_size, cfg.context, seed)
            with rt.autocast():
                logits = net(x)  # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            optimizer_step(loss, opt, scaler, cfg.clip, model.parameters())
            budget.stop(sess.step_count + 1)
            sched.step()
            sess.step(tokens, spent=budget.spent())  # the step that spends the budget is the last: evaluated at
            if sess.due("log"):
                sess.log("train", loss=loss, lr=sched.get_last_lr()[0], seconds=round(budget.used, 2))
            if sess.due("eval"):
                curve.append(dict(step=sess.step_count, seconds=round(budget.used, 2),
                                  wall_seconds=round(budget.wall, 2), val_loss=evaluate_lm(net, val, rt)))
                sess.log("valid", loss=curve[-1]["val_loss"], seconds=curve[-1]["seconds"])
    sess.finish()  # checkpoint-<name>.pt
    load.append(os.getloadavg()[0])
    return dict(card=sess.card(), curve=curve, val_loss=round(curve[-1]["val_loss"], 4),
                seconds=round(budget.used, 2), wall_seconds=round(budget.wall, 2),
                tokens_per_second=round(sess.rate, 1),
                tokens_per_clock_second=round(sess.step_count * tokens / max(budget.used, 1e-9), 1),
                steps=sess.step_count, tokens=sess.step_count * tokens, load_average=[round(v, 2) for v in load])


def plot_curves(curves: dict, path, clock: str, title: str):
    """Validation loss against training seconds, one line per net ({label: curve}); the untrained point (ln V
    or so) is left out, so the axis shows where the nets differ."""
    series = {label: ([p["seconds"] for p in c[1:]], [p["val_loss"] for p in c[1:]]) for label, c in curves.items()}
    return line_plot(series, path, xlabel=f"training seconds ({clock}, evaluation excluded)",
                     ylabel="validation loss (nats/char)", title=title)


def vs_lstm_title(cfg: dict, clock: str) -> str:
    limit = f"{cfg['budget_seconds']:g} {clock} s each" if cfg["budget_seconds"] else \
        f"{cfg['steps'] or 'all'} steps each"
    return (f"Tiny Shakespeare, GPT vs LSTM at equal parameters: validation loss\n"
            f"preset {cfg['preset']}, {limit}, batch {cfg['batch_size']} x {cfg['context']}, seed {cfg['seed']}")


def check(cfg, rt) -> None:
    if cfg.resume:
        raise UserError("vs_lstm does not resume; it restarts from scratch (each trained net is kept as "
                        "checkpoint-<net>.pt in its run directory)")
    for name in ("layers", "d_model", "heads", "context", "warmup", "lstm_layers"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.heads:
        raise UserError(f"--d-model {cfg.d_model} is not divisible by --heads {cfg.heads}")
    if cfg.budget_seconds < 0 or cfg.lstm_hidden < 0 or not cfg.lstm_lr > 0:
        raise UserError("--budget-seconds and --lstm-hidden must be >= 0, --lstm-lr positive")
    if cfg.budget_seconds and rt.distributed:
        raise UserError("--budget-seconds needs one process (ranks would disagree on when it is spent); "
                        "under torchrun give --steps")
    if cfg.batch_size % rt.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by {rt.world_size} ranks")


def run_vs_lstm(cfg, rt, argv) -> dict:
    """06's GPT against 05's LSTM LM on Tiny Shakespeare, equal parameters, equal training seconds (one PNG)"""
    check(cfg, rt)
    corpus = corpora.load("tinyshakespeare", cfg.data_dir)
    vocab = len(corpus["vocab"])
    text, valid = corpus["train"].to(rt.device), corpus["valid"].to(rt.device)
    val = tiled(valid, cfg.context, 64, rt)  # the same validation windows for both nets
    torch.manual_seed(cfg.seed)
    gpt = gpt_from(vars(cfg), vocab).to(rt.device)
    hidden = cfg.lstm_hidden or matched_hidden(count_params(gpt), vocab, cfg.lstm_layers)
    torch.manual_seed(cfg.seed)
    lstm = LanguageModel(vocab, hidden, cfg.lstm_layers, cfg.dropout, "lstm", "torch",
                         init_range=INIT_RANGE).to(rt.device)
    names = {"gpt": f"gpt-{cfg.layers}x{cfg.d_model}", "lstm": f"lstm-{cfg.lstm_layers}x{hidden}"}
    params = {"gpt": count_params(gpt), "lstm": count_params(lstm)}
    if rt.is_main:
        print(f"parameters: {names['gpt']} {params['gpt']:,}, {names['lstm']} {params['lstm']:,} "
              f"({params['lstm'] / params['gpt'] - 1:+.1%})")
    run = open_run(cfg, rt, MILESTONE, f"vs_lstm-{names['gpt']}-{names['lstm']}", argv)
    if rt.is_main:
        print(f"{lr_line(cfg, lr_record(cfg, schedule=False))} of the GPT; --lstm-lr {cfg.lstm_lr:g}: the LSTM's")
    arms = {"gpt": train_arm(cfg, rt, run, names["gpt"], gpt, gpt, cfg.lr, text, val),
            "lstm": train_arm(cfg, rt, run, names["lstm"], lstm, Windowed(lstm), cfg.lstm_lr, text,
                              val)}
    clock = {"cpu": "CPU", "cuda": "GPU"}.get(rt.device.type, "wall")
    plot = None
    if rt.is_main:
        plot = plot_curves({f"{names[k]} ({params[k]:,} params)": a["curve"] for k, a in arms.items()},
                           run.dir / "vs_lstm.png", clock, vs_lstm_title(vars(cfg), clock))
    g, m = arms["gpt"], arms["lstm"]
    per_arm = {f"{k}_{key}": a[key] for k, a in arms.items()
               for key in ("val_loss", "tokens_per_second", "tokens_per_clock_second", "seconds", "wall_seconds",
                           "steps", "tokens", "load_average", "curve")}
    card = run.summary(
        model=f"vs_lstm:{names['gpt']},{names['lstm']}", dataset=DATASET,
        metric="val_loss (nats/char) of the GPT, at equal parameters and training budget with the LSTM",
        value=g["val_loss"], paper_value=None,
        paper_source="Vaswani et al. 2017, sec. 4: self-attention needs O(1) sequential operations, recurrence O(n)",
        params=params["gpt"], train_seconds=round(g["card"]["train_seconds"] + m["card"]["train_seconds"], 2),
        examples_per_second=g["tokens_per_second"], tokens_per_second=g["tokens_per_second"], steps=g["steps"],
        gpt_params=params["gpt"], lstm_params=params["lstm"], lstm_hidden=hidden, budget_seconds=cfg.budget_seconds,
        budget_clock=clock, **per_arm, plot=str(plot) if plot else None, **lr_record(cfg, schedule=False),
        peak_lr_lstm=cfg.lstm_lr)
    if rt.is_main:
        print(f"\n{'net':<14} {'params':>9} {'steps':>6} {clock + ' s':>7} {'tokens/s':>9} "
              f"{'tok/' + clock + ' s':>10} {'val loss':>9}")
        for k, a in arms.items():
            print(f"{names[k]:<14} {params[k]:>9,} {a['steps']:>6} {a['seconds']:>7.1f} "
                  f"{a['tokens_per_second']:>9,.0f} {a['tokens_per_clock_second']:>10,.0f} {a['val_loss']:>9.4f}")
        print("load average (1 min) at the start and end of each net: "
              + ", ".join(f"{names[k]} {a['load_average'][0]:.1f} -> {a['load_average'][1]:.1f}"
                          for k, a in arms.items()))
        print(f"plot: {plot}\nrun record: {run.dir}")
    return card
