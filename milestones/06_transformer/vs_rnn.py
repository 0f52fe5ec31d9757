"""Before the Transformer: the recurrent encoder-decoder with attention it replaced (rnn_seq2seq.py: a
bidirectional LSTM encoder, Bahdanau's additive attention, an LSTM decoder), against the Transformer, on the
same task and for the same training budget.

    python -m milestones train 06_transformer --experiment vs_rnn --preset quick --threads 1

Both arms read Multi30k de->en through the same joint BPE vocabulary and the same token-count batches in the
same order (step s of either arm is the same batch), with the same loss (label-smoothed cross-entropy), and
each trains until it has spent --budget-seconds of training (CPU seconds of this process on a CPU, GPU
seconds on a GPU; evaluation not counted), or for --steps steps when the budget is 0. Each keeps its own
optimiser: the Transformer the paper's Adam(0.9, 0.98, 1e-9) with the warm-up schedule of eq. 3, the RNN
Adam at a constant --rnn-lr with its gradient norm clipped to 1 (Bahdanau et al. clipped at 1, with Adadelta).
Then each translates the test set with the same beam search (decode.py) and is scored with sacreBLEU.

Into one run directory:
    metrics.jsonl              training loss, validation loss and test BLEU of each arm (rows tagged "model")
    translations-<arm>.txt     each arm's test translations
    summary.json               per arm: bleu_<arm>, params_<arm>, tokens_per_second_<arm>, train_seconds_<arm>, ...
    checkpoint-<arm>.pt        each trained net; tokenizer.json, the vocabulary both used
"""

import torch

from common.device import seed_everything
from common.errors import UserError
from common.session import open_run

from . import data
from .lr import lr_line, lr_record
from .rnn_seq2seq import RNNSearch
from .seq2seq import check_seq2seq, comparison_data, fit, paper_optimizer, score, transformer_from

MILESTONE = "06_transformer"
DATASET = "Multi30k de-en (test_2016_flickr)"
ARMS = ("transformer", "rnn")
RNN_CLIP = 1.0  # Bahdanau et al., appendix A.2.2: the gradient's norm renormalised to at most 1


def build(arm: str, cfg, vocab_size: int, positions: int):
    """(model, optimiser, schedule, clip) of one arm."""
    if arm == "transformer":
        model = transformer_from(vars(cfg), vocab_size, positions)
        opt, sched = paper_optimizer(model, cfg)  # sec. 5.3, eq. 3
        return model, opt, sched, cfg.clip
    model = RNNSearch(vocab_size, cfg.rnn_embed, cfg.rnn_hidden, dropout=cfg.dropout, pad_id=data.PAD)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.rnn_lr)
    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), RNN_CLIP


def run_vs_rnn(cfg, rt, argv) -> dict:
    """before the Transformer: an LSTM encoder-decoder with Bahdanau's attention against the Transformer, same
    data and batches, equal training budget (--budget-seconds), BLEU and tokens/s of both"""
    check_seq2seq(cfg)
    if cfg.resume:
        raise UserError("the vs_rnn experiment does not resume; run it again (each trained net is kept as "
                        "checkpoint-<arm>.pt in its run directory)")
    if cfg.beam < 1:
        raise UserError(f"--beam must be at least 1 (1 = greedy), got {cfg.beam}")
    if min(cfg.rnn_embed, cfg.rnn_hidden) < 1 or cfg.rnn_lr <= 0:
        raise UserError("--rnn-embed and --rnn-hidden must be at least 1 and --rnn-lr positive")
    if cfg.budget_seconds < 0 or cfg.test_size < 0 or cfg.max_len < 0:
        raise UserError("--budget-seconds, --test-size and --max-len must be >= 0")
    if cfg.budget_seconds and rt.distributed:
        raise UserError("--budget-seconds stops each rank on its own clock: under torchrun use --steps")
    d = comparison_data(cfg, rt, "test")
    run = open_run(cfg, rt, MILESTONE, "vs_rnn", argv)
    if rt.is_main:
        data.save_tokenizer(d.tok, run.dir / "tokenizer.json")
        print(f"{lr_line(cfg, lr_record(cfg, schedule=True))} for the Transformer; the RNN's Adam: constant "
              f"--rnn-lr {cfg.rnn_lr:g}")

    arms = {}
    for arm in ARMS:
        seed_everything(cfg.seed)  # each arm starts from the same RNG state, whichever runs first
        model, opt, sched, clip = build(arm, cfg, d.tok.get_vocab_size(), d.positions)
        model.to(rt.device)
        sess, spent, seen = fit(arm, cfg, rt, run, d.train, d.valid, model, opt, sched, clip, "vs_rnn")
        test = score(arm, model, d.ids, d.references, d.tok, cfg, rt, run.dir)
        sess.log("test", bleu=test["bleu"], bleu_lowercase=test["bleu_lowercase"], sentences=d.n,
                 decode_seconds=test["decode_seconds"])
        sess.finish()  # checkpoint-<arm>.pt, with the results
        card = sess.card()
        arms[arm] = dict(bleu=round(test["bleu"], 2), bleu_lowercase=round(test["bleu_lowercase"], 2),
                         params=card["params"], tokens_per_second=card["tokens_per_second"],
                         train_seconds=card["train_seconds"], budget_seconds_spent=round(spent, 2),
                         tokens_per_budget_second=round(seen / spent, 1) if spent else None,
                         steps=card["steps"], epochs=card["epochs"], valid_loss=round(sess.results["valid_loss"], 4),
                         decode_seconds=test["decode_seconds"])
        signature = test["signature"]

    per_arm = {f"{key}_{arm}": value for arm, values in arms.items() for key, value in values.items()}
    seconds = sum(a["train_seconds"] for a in arms.values())
    tokens = sum(a["tokens_per_second"] * a["train_seconds"] for a in arms.values())
    gap = arms["transformer"]["bleu"] - arms["rnn"]["bleu"]
    card = run.summary(
        model="vs_rnn:transformer,rnn",
        dataset=DATASET if d.complete else f"{DATASET}, first {d.n} test sentences",
        metric="BLEU, Transformer minus LSTM + attention (equal training budget)", value=round(gap, 2),
        paper_value=None, paper_source=None, params=max(a["params"] for a in arms.values()),
        train_seconds=round(seconds, 2), examples_per_second=round(tokens / seconds, 1) if seconds else 0.0,
        steps=sum(a["steps"] for a in arms.values()), budget_seconds=cfg.budget_seconds, bleu_signature=signature,
        beam=cfg.beam, alpha=cfg.alpha, test_sentences=d.n, **per_arm, **lr_record(cfg, schedule=True),
        peak_lr_rnn=cfg.rnn_lr)
    if rt.is_main:
        print(f"\n{'arm':<12} {'params':>10} {'steps':>6} {'budget s':>9} {'tokens/s':>9} {'valid NLL':>9} {'BLEU':>6}")
        for arm, a in arms.items():
            print(f"{arm:<12} {a['params']:>10,} {a['steps']:>6} {a['budget_seconds_spent']:>9.1f} "
                  f"{a['tokens_per_second']:>9,.0f} {a['valid_loss']:>9.3f} {a['bleu']:>6.2f}")
        print(f"BLEU on {d.n} test sentences ({signature}), beam {cfg.beam}; run record: {run.dir}")
    return card
