"""Train LSTMs: the 1997 adding problem against an Elman RNN, and LSTM language models.

    python -m milestones train 05_lstm --experiment adding --preset quick      # RNN vs LSTM, error vs lag
    python -m milestones train 05_lstm --experiment ptb --preset quick         # Zaremba et al. 2014, small
    python -m milestones train 05_lstm --experiment ptb --size medium          # 82.7 test perplexity in the paper
    python -m milestones train 05_lstm --experiment shakespeare --preset quick # char-rnn; then `sample 05_lstm`
"""

import argparse
import math
import typing
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from common import data
from common.config import TrainConfig, arg, parse_list, parse_rates, train_command
from common.data.text import BPTTLoader
from common.errors import UserError
from common.loop import evaluate_lm, optimizer_step
from common.plot import save
from common.session import Session, open_run

from .adding import TEST_SEQUENCES, gradient_plot, train_one
from .figures import error_vs_length_figure
from .model import LanguageModel, detach_state, set_forget_bias, state_from_list, state_list
from .sample import generate

MILESTONE = "05_lstm"
SIZES = ("small", "medium", "large")
TEXT = ("ptb", "shakespeare")  # the language-model experiments


@dataclass
class Config(TrainConfig):
    experiment: str = arg("ptb", "what to run (the list below)")
    size: str = arg("medium", "Zaremba et al.'s small (no dropout), medium or large recipe", choices=SIZES,
                    only="ptb")
    model: str = arg("lstm", "recurrent layer (the adding problem trains each of --models)", choices=("lstm", "rnn"),
                     only=TEXT)
    impl: str = arg("torch", "torch: nn.LSTM/nn.RNN (cuDNN on a GPU); scratch: our cell, written from the "
                    "equations, stepped in Python (slower, same numbers)", choices=("torch", "scratch"))
    forget_gate: bool = arg(True, "Gers et al. 2000's forget gate; false = the 1997 cell")
    forget_bias: typing.Optional[float] = arg(None, "set each forget gate's total bias (b_if + b_hf) to this value "
                                              "after init (default: leave the init alone)")
    hidden: int = arg(200, "hidden units per layer")
    layers: int = arg(2, "stacked recurrent layers", only=TEXT)
    dropout: float = arg(0.0, "dropout on non-recurrent connections (Zaremba et al.'s placement)", only=TEXT)
    init_range: float = arg(0.1, "all parameters uniform in [-r, r] (0: PyTorch's default init)",
                            only=(*TEXT, "adding"))
    bptt: int = arg(35, "truncated BPTT window (time steps per batch); the state is carried across windows", only=TEXT)
    optim: str = arg("sgd", "sgd (Zaremba; 1997's adding problem), rmsprop (char-rnn) or adam",
                     choices=("sgd", "rmsprop", "adam"), only=(*TEXT, "adding"))
    lr_decay: float = arg(0.5, "multiply the LR by this once per epoch after --decay-start epochs", only=TEXT)
    decay_start: int = arg(4, "epochs at the full LR before the decay starts", only=TEXT)
    clip: float = arg(5.0, "clip the global gradient norm to this value (adding: 0 = no clipping)")
    time_sum: bool = arg(True, "loss summed over the BPTT window, averaged over the batch (Zaremba's code); "
                         "false: averaged over all tokens", only=TEXT)
    eval_batch_size: int = arg(10, "parallel streams when evaluating (1 is Zaremba's; 10 is faster, nearly equal)",
                               only=TEXT)
    ckpt_every: int = arg(500, "save checkpoint.pt every N steps (and at the end, with the results)")
    sample_chars: int = arg(500, "characters sampled into samples/ at the end of training", only="shakespeare")
    target: float = arg(1.886, "the validation loss (nats/char) whose first crossing is timed (seconds_to_target; "
                        "1.886: nanoGPT's CPU configuration, the race 06's GPT runs too)", only="shakespeare")
    lengths: str = arg("10,50,100", "minimal sequence lengths T to train at, comma-separated", only="adding")
    models: str = arg("rnn,lstm", "recurrent layers to compare, comma-separated: rnn (Elman), lstm (with a forget "
                      "gate unless --forget-gate false), lstm1997 (no forget gate, scratch cell)", only="adding")
    solved_error: float = arg(0.01, "stop once this fraction of test sequences or fewer is wrong", only="adding")
    lrs: str = arg("", "learning rates every model tries at every T, comma-separated; each is reported at its best "
                   "rate (fewest wrong, then fewest sequences; empty = --lr only)", only="adding")


ZAREMBA = {  # Zaremba, Sutskever & Vinyals 2014, section 4.1, and the configurations of their released code
    "small": dict(hidden=200, dropout=0.0, init_range=0.1, epochs=13, decay_start=4, lr_decay=0.5, clip=5.0,
                  bptt=20),
    "medium": dict(hidden=650, dropout=0.5, init_range=0.05, epochs=39, decay_start=6, lr_decay=1 / 1.2, clip=5.0,
                   bptt=35),
    "large": dict(hidden=1500, dropout=0.65, init_range=0.04, epochs=55, decay_start=14, lr_decay=1 / 1.15,
                  clip=10.0, bptt=35),
}
PAPER_PPL = {"small": (120.7, 114.5), "medium": (86.2, 82.7), "large": (82.2, 78.4)}  # (valid, test), Table 1
LM = dict(layers=2, batch_size=20, lr=1.0, optim="sgd", time_sum=True)  # shared by the three sizes
CHAR_RNN = dict(layers=2, dropout=0.5, init_range=0.08, bptt=50, batch_size=50, optim="rmsprop", lr=2e-3,
                lr_decay=0.97, decay_start=10, clip=5.0, time_sum=False)  # char-rnn (Karpathy 2015), except:
# its defaults are rnn_size 128 and dropout 0; we take dropout 0.5 and set the size per preset (NOTES.md)

PRESETS = {
    # adding/paper: 1997's experiment 4 as far as our reading of the paper goes: the 1997 cell (no forget gate),
    # 4 cells (the paper: 2 memory blocks of 2 cells), weights uniform in +-0.1, online updates (one sequence per
    # weight change) by plain gradient descent at learning rate 0.5, no clipping, T = 100, 500, 1000. Still ours:
    # full BPTT (the paper truncated the gradient), a gate per cell (the paper: per block), a linear read-out,
    # tanh squashing, the stop rule (--solved-error on the 2,560 test sequences) and the budget (the paper's
    # T = 1000 run took 853,000 sequences). Not measured: 853,000 one-sequence steps take hours on any device.
    "adding/paper": dict(lengths="100,500,1000", models="lstm", hidden=4, steps=1_000_000, batch_size=1,
                         optim="sgd", lr=0.5, clip=0.0, init_range=0.1, eval_every=5000, solved_error=1 / 2560,
                         forget_gate=False),
    # adding/modern: the paper's lengths and cell with modern training (Adam, minibatches of 32, 64 cells, clip 1)
    "adding/modern": dict(lengths="100,500,1000", hidden=64, steps=100_000, batch_size=32, optim="adam", lr=1e-3,
                          clip=1.0, init_range=0.0, eval_every=500, solved_error=1 / 2560, forget_gate=False),
    # default, quick, smoke: the forget-gate LSTM (bias 3) against the Elman RNN and the 1997 cell, Adam, BPTT
    "adding/default": dict(lengths="10,25,50,100,200", models="rnn,lstm,lstm1997", hidden=64, steps=20_000,
                           batch_size=64, optim="adam", lr=3e-3, clip=1.0, init_range=0.0, eval_every=250,
                           forget_bias=3.0),
    # quick: <= 5 minutes on a 2-core AVX2 laptop, so two lengths: the short lag every net solves and Table 7's
    # T = 100 (--lengths 10,25,50,100 draws the curve between them in 1.4 times the time)
    "adding/quick": dict(lengths="10,100", models="rnn,lstm,lstm1997", hidden=32, steps=8000, batch_size=64,
                         optim="adam", lr=3e-3, clip=1.0, init_range=0.0, eval_every=100, forget_bias=3.0),
    "adding/smoke": dict(lengths="10", models="rnn,lstm,lstm1997", hidden=8, steps=20, batch_size=16, optim="adam",
                         lr=3e-3, clip=1.0, init_range=0.0, eval_every=10, forget_bias=3.0),
    # ptb/paper and ptb/default take Zaremba's recipe of --size (see presets_for)
    "ptb/paper": dict(LM),
    "ptb/default": dict(LM),
    "ptb/quick": dict(LM),  # the --size recipe (small by default here) for two epochs, LR halved for the second
    "ptb/smoke": dict(LM, size="small", hidden=16, epochs=1, steps=12, bptt=10, eval_batch_size=200, ckpt_every=5),
    "shakespeare/paper": dict(CHAR_RNN, hidden=512, layers=3, epochs=50),
    "shakespeare/default": dict(CHAR_RNN, hidden=512, epochs=20),
    "shakespeare/quick": dict(CHAR_RNN, hidden=256, dropout=0.0, epochs=1, steps=600, eval_every=100,
                              precision="auto"),
    "shakespeare/smoke": dict(CHAR_RNN, hidden=16, epochs=1, steps=10, bptt=20, batch_size=8, eval_every=5,
                              eval_batch_size=64, sample_chars=50, ckpt_every=5),
}


def presets_for(argv) -> dict:
    """PRESETS with Zaremba's recipe of the requested --size folded into ptb/paper and ptb/default."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--size", choices=SIZES)
    p.add_argument("--preset")
    known, _ = p.parse_known_args(argv)
    size = known.size or ("small" if known.preset == "quick" else "medium")
    presets = {k: dict(v) for k, v in PRESETS.items()}
    for name in ("ptb/paper", "ptb/default"):
        presets[name].update(ZAREMBA[size])
    # bf16 where native (auto), as the other quick presets
    presets["ptb/quick"].update(ZAREMBA[size], size=size, epochs=2, decay_start=1, lr_decay=0.5, precision="auto")
    return presets


# ---------------------------------------------------------------------------------------------------------
# The adding problem: RNN vs LSTM, error vs sequence length
# ---------------------------------------------------------------------------------------------------------

def run_adding(cfg: Config, rt, argv) -> dict:
    """the 1997 long-lag task (generated): Elman RNN vs LSTM, test error vs the minimal lag T"""
    if cfg.resume:
        raise UserError("--resume is for the language models; the adding runs take minutes from scratch")
    lengths = parse_list(cfg.lengths, "lengths", int)
    kinds = parse_list(cfg.models, "models", str, allowed=("rnn", "lstm", "lstm1997"))
    rates = parse_rates(cfg.lrs) if cfg.lrs else [cfg.lr]
    if cfg.clip < 0 or cfg.init_range < 0:
        raise UserError("--clip and --init-range must be >= 0 (0: no clipping, PyTorch's default init)")
    if min(lengths) < 10:
        raise UserError(f"--lengths must be at least 10 (the first marker is among the first ten pairs), got {lengths}")
    if rt.device.type == "cpu" and not cfg.threads:  # 32-64 units: a second thread costs more than the matmul it splits
        torch.set_num_threads(1)
    run = open_run(cfg, rt, MILESTONE, "adding-" + "-vs-".join(kinds), argv)
    curves = gradient_plot(run.dir / "grad_norm_vs_lag.png", T=200, hidden=cfg.hidden,
                           forget_biases=sorted({1.0, cfg.forget_bias if cfg.forget_bias is not None else 1.0}))
    for k in (1, 10, 50, 100, 199):
        run.log(k, "init", lag=k, **{name: v[k] for name, v in curves.items()})
    results, tried = [], []
    for T in lengths:
        for kind in kinds:
            runs = []
            for lr in rates:  # one net per rate, its Session, checkpoint-<kind>-T<T>[-lr<lr>].pt
                r = train_one(replace(cfg, lr=lr), kind, T, rt, run, make_optimizer, sweep=len(rates) > 1)
                runs.append(r)
                if rt.is_main:
                    stop = r["paper_stop_sequences"]
                    print(f"T={T:<5} {kind:<8} lr {lr:<7g}: {r['error']:6.1%} of test sequences wrong ({r['wrong']} "
                          f"of {TEST_SEQUENCES}), test MSE {r['mse']:.5f}, "
                          f"{'solved' if r['solved'] else 'NOT solved'} after {r['sequences']:,} sequences; the "
                          f"paper's stop rule {f'met after {stop:,}' if stop else 'not met'} ({r['seconds']:.0f} s)")
            results.append(min(runs, key=lambda r: (r["wrong"], r["sequences"])))  # the model at its best rate
            tried += runs
    title = f"Adding problem: test error vs length, preset {cfg.preset}, H = {cfg.hidden}, seed {cfg.seed}"
    save(error_vs_length_figure(results, cfg.solved_error, title), run.dir / "error_vs_length.png")
    last = [r for r in results if r["T"] == max(lengths)]
    head = next((r for r in last if r["model"] == "lstm"), last[-1])
    paper = 1 / 2560 if max(lengths) == 100 and head["model"] == "lstm" else None
    seconds = sum(r["seconds"] for r in tried)
    card = run.summary(
        model=f"adding-{head['model']}-{cfg.hidden}", dataset="adding problem (generated)",
        metric=f"test_error at T={max(lengths)}", value=head["error"], paper_value=paper,
        paper_source="Hochreiter & Schmidhuber 1997, Table 7: 1 of 2560 test sequences wrong at T=100"
        if paper else None, params=head["params"], train_seconds=round(seconds, 1),
        examples_per_second=round(sum(r["sequences"] for r in tried) / max(seconds, 1e-6), 1),
        steps=sum(r["steps"] for r in tried), results=results, lrs=rates,
        **({"sweep": tried} if len(rates) > 1 else {}))
    if rt.is_main:
        best = " at its best rate" if len(rates) > 1 else ""
        print("\n   T  " + "".join(f"{k + ' wrong':>27}" for k in kinds)
              + f"   (of {TEST_SEQUENCES} test sequences{best})")
        for T in lengths:
            print(f"{T:>5} " + "".join(f"{r['error']:>10.1%} ({r['wrong']:>4}) lr {r['lr']:<6g}"
                                       for r in results if r["T"] == T))
        print(f"run record and plots (error_vs_length.png, grad_norm_vs_lag.png): {run.dir}")
    return card


# ---------------------------------------------------------------------------------------------------------
# Language models: PTB (words) and Tiny Shakespeare (characters)
# ---------------------------------------------------------------------------------------------------------

def lm_step_lr(cfg: Config, steps_per_epoch: int):
    """Zaremba's schedule: full LR for `decay_start` epochs, then times `lr_decay` at every new epoch."""
    return lambda s: cfg.lr_decay ** max(s // steps_per_epoch + 1 - cfg.decay_start, 0)


def make_optimizer(cfg: Config, params):
    if cfg.optim == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    if cfg.optim == "rmsprop":  # char-rnn: decay rate 0.95
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.95, eps=1e-8)
    return torch.optim.Adam(params, lr=cfg.lr)


def check_lm(cfg: Config) -> None:
    if cfg.forget_bias is not None and (cfg.model != "lstm" or not cfg.forget_gate):
        raise UserError("--forget-bias needs an LSTM with a forget gate")
    for name in ("hidden", "layers", "bptt", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if not cfg.clip > 0 or not cfg.lr_decay > 0:
        raise UserError("--clip and --lr-decay must be positive")


def run_lm(cfg: Config, rt, argv, words: bool) -> dict:
    """An LSTM (or RNN) language model over words (PTB) or characters (Tiny Shakespeare), by truncated BPTT."""
    check_lm(cfg)
    corpus = data.load("ptb" if words else "tinyshakespeare", cfg.data_dir)
    vocab = corpus["vocab"]
    loader = lambda split, b, last: BPTTLoader(corpus[split], b, cfg.bptt, rt.device, drop_last=last,
                                               rank=rt.rank, world_size=rt.world_size)
    train = loader("train", cfg.batch_size, True)
    valid = loader("valid", cfg.eval_batch_size, False)
    model = LanguageModel(len(vocab), cfg.hidden, cfg.layers, cfg.dropout, cfg.model, cfg.impl, cfg.forget_gate,
                          cfg.init_range).to(rt.device)
    if cfg.forget_bias is not None:
        set_forget_bias(model.rnn, cfg.forget_bias)
    name = f"{cfg.experiment}-{cfg.model}-{cfg.layers}x{cfg.hidden}" + (f"-{cfg.size}" if words else "")
    total = cfg.steps or cfg.epochs * len(train)
    opt = make_optimizer(cfg, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lm_step_lr(cfg, len(train)))
    scaler = rt.grad_scaler()
    sess = Session(cfg, rt, open_run(cfg, rt, MILESTONE, name, argv), total, len(train), unit="tokens")
    state = None  # the recurrent state carried from window to window; checkpointed, so a resume mid-epoch is exact
    ckpt = sess.attach(model, opt, sched, scaler, extra=lambda: dict(
        carry=[s.detach().cpu() for s in state_list(state)], vocab=vocab, words=words))
    state = state_from_list([t.to(rt.device) for t in ckpt.get("carry", [])], cfg.model)
    net = rt.wrap(model, compile=cfg.compile)
    with sess:
        while sess.running:
            _, start = sess.position()
            if start == 0:
                state = None  # each epoch starts from a zero state, as in Zaremba's code
            for x, y in train.batches(start):
                state = detach_state(state)  # truncated BPTT: carry the values, not the graph
                with rt.autocast():
                    logits, state = net(x, state)  # (B, T, V)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())  # mean NLL per token
                objective = loss * y.shape[1] if cfg.time_sum else loss
                optimizer_step(objective, opt, scaler, clip=cfg.clip, params=model.parameters())  # Zaremba's norm clip
                sched.step()
                sess.step(y.numel() * rt.world_size)
                if sess.due("log"):
                    sess.log("train", loss=loss, lr=sched.get_last_lr()[0])
                if sess.due("eval"):
                    valid_nll = evaluate_lm(net, valid, rt)
                    sess.log("valid", loss=valid_nll, perplexity=math.exp(valid_nll))
                    if not words:
                        sess.mark_target(valid_nll, cfg.target, cfg.batch_size * cfg.bptt)
                if not sess.running:
                    break
    valid_nll = sess.results["valid_loss"]
    if words:
        test_nll = evaluate_lm(net, loader("test", cfg.eval_batch_size, False), rt)
        sess.log("test", loss=test_nll, perplexity=math.exp(test_nll))
        paper = PAPER_PPL[cfg.size][1] if cfg.model == "lstm" else None
        card = sess.summary(dataset="Penn Treebank (Mikolov split)", metric="test_perplexity",
                            value=round(math.exp(test_nll), 2), paper_value=paper,
                            paper_source=f"Zaremba, Sutskever & Vinyals 2014, Table 1 ({cfg.size})" if paper else None,
                            valid_perplexity=round(math.exp(valid_nll), 2), impl=cfg.impl)
        result = f"test perplexity {card['value']:.1f} (paper, {cfg.size}: {paper}), valid {math.exp(valid_nll):.1f}"
    else:
        card = sess.summary(dataset="Tiny Shakespeare (last 10% = validation)", metric="val_loss (nats/char)",
                            value=round(valid_nll, 4), paper_value=None, impl=cfg.impl,
                            paper_source="char-rnn (Karpathy 2015) published samples, not a number",
                            target=cfg.target, **sess.reached())
        result = f"validation loss {valid_nll:.4f} nats/char ({valid_nll / math.log(2):.3f} bits/char)"
        result += (f"; <= {cfg.target} at step {card['steps_to_target']}, {card['seconds_to_target']:.1f} s after the "
                   f"process started" if card["steps_to_target"] else f"; never <= {cfg.target}")
        if rt.is_main and cfg.sample_chars > 0:
            text = generate(model, vocab, False, "\n", cfg.sample_chars, 0.8, rt.device, seed=cfg.seed)
            (sess.run.dir / "samples").mkdir(exist_ok=True)
            (sess.run.dir / "samples" / "sample.txt").write_text(text)
            print(f"--- sample (temperature 0.8) ---\n{text}\n---")
    if rt.is_main:
        print(f"{name}: {result}; {card['train_seconds']:.0f} s, {sess.rate:,.0f} tokens/s; run record: {sess.run.dir}")
    return card


def run_ptb(cfg: Config, rt, argv) -> dict:
    """word-level LM on Penn Treebank: Zaremba et al. 2014's small, medium or large recipe (--size)"""
    return run_lm(cfg, rt, argv, words=True)


def run_shakespeare(cfg: Config, rt, argv) -> dict:
    """character-level LM on Tiny Shakespeare (char-rnn); then `python -m milestones sample 05_lstm --run DIR`"""
    return run_lm(cfg, rt, argv, words=False)


EXPERIMENTS = {"adding": run_adding, "ptb": run_ptb, "shakespeare": run_shakespeare}


def main(argv=None, prog="python -m milestones train 05_lstm"):
    return train_command(Config, presets_for(argv), EXPERIMENTS, argv, prog, __doc__, MILESTONE, preset_help={
        "modern": "The paper's lengths and cell, trained with Adam on minibatches of 32, 64 cells, clip 1."})


if __name__ == "__main__":
    main()
