"""The paper's Table 3 at a CPU budget, and the warm-up question it left open: which one-line changes to the
base model matter, by how much, and in which direction.

    python -m milestones train 06_transformer --experiment ablations --preset quick --threads 1

Every arm is a 3+3 x 256 Transformer (vs_rnn/quick's) with one change, trained from the same initial RNG state on
the same token-count batches in the same order for the same --steps, then scored on the development set (Multi30k
val, 1,014 sentences) as Table 3 was (newstest2013): validation perplexity and BLEU with beam search, no checkpoint
averaging.

    base            as vs_rnn/quick: 4 heads, label smoothing 0.1, sinusoids, post-LN, eq. 3's warm-up
    one_head        h = 1 at the same d_model, so d_k = d_v = d_model (Table 3, row A, first line)
    no_smoothing    epsilon_ls = 0 (row D, last line)
    learned         learned positional embeddings in place of the sinusoids (row E)
    post_no_warmup  the paper's post-LN with eq. 3's ramp removed: its peak rate from step 1, then its decay
    pre_no_warmup   the same schedule with pre-LN, x + Sublayer(LayerNorm(x)) (Xiong et al. 2020: pre-LN
                    trains without the warm-up that post-LN needs)

Into one run directory:
    metrics.jsonl              training loss, validation loss and dev BLEU of each arm (rows tagged "model")
    ablations.png              validation NLL against steps, every arm, with its dev BLEU
    translations-<arm>.txt     each arm's dev-set translations
    summary.json               per arm: bleu_<arm>, valid_loss_<arm>, params_<arm>, ...; the value is base's BLEU
    checkpoint-<arm>.pt        each trained net; tokenizer.json, the vocabulary all arms used
"""

import dataclasses
import json
import math


from common.device import count_params, seed_everything
from common.errors import UserError
from common.plot import line_figure, save
from common.session import Diverged, open_run

from . import data
from .lr import lr_line, lr_record
from .seq2seq import (check_seq2seq, comparison_data, fit, paper_optimizer, rate, rate_without_warmup, score,
                      transformer_from)

MILESTONE = "06_transformer"
DATASET = "Multi30k de-en (val, 1,014 sentences: the development set)"
# each arm: (what changes in the config, whether eq. 3 keeps its warm-up, the paper's dev BLEU if Table 3 has it)
ARMS = {
    "base": (dict(), True, 25.8),
    "one_head": (dict(heads=1), True, 24.9),
    "no_smoothing": (dict(label_smoothing=0.0), True, 25.3),
    "learned": (dict(positions="learned"), True, 25.7),
    "post_no_warmup": (dict(norm="post"), False, None),
    "pre_no_warmup": (dict(norm="pre"), False, None),
}
TABLE_3 = "Vaswani et al. 2017, Table 3 (newstest2013 dev BLEU; base 25.8)"


def parse_arms(text: str) -> list:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise UserError(f"--arms: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(ARMS)}")
    return list(dict.fromkeys(arms))


def valid_curves(metrics, arms) -> dict:
    """{arm: (steps, validation NLLs)} from the run's metrics.jsonl."""
    rows = [json.loads(line) for line in open(metrics)]
    rows = [r for r in rows if r["split"] == "valid" and r.get("model") in arms]
    return {arm: ([r["step"] for r in rows if r["model"] == arm], [r["loss"] for r in rows if r["model"] == arm])
            for arm in arms}


def ablations_figure(curves: dict, bleu: dict, title: str):
    """Validation NLL against steps, one line per Table 3 arm, each labelled with its dev BLEU (and the paper's,
    where Table 3 has one)."""
    def label(arm):
        paper = ARMS.get(arm, (None, None, None))[2]
        if arm not in bleu:
            return arm
        return f"{arm}: dev BLEU {bleu[arm]:.2f}" + (f" (paper {paper})" if paper else "")
    return line_figure({label(arm): c for arm, c in curves.items()}, title, "training step",
                       "validation NLL per target token (nats)")


def ablations_title(cfg: dict) -> str:
    return (f"Table 3 at a CPU budget, one change per arm: validation loss\n"
            f"preset {cfg['preset']}, {cfg['steps']} steps of {cfg['batch_tokens']:,} tokens each, seed {cfg['seed']}")


def build(arm: str, cfg, vocab_size: int, positions: int):
    """(the arm's config, model, optimiser, schedule): one change from cfg, the paper's Adam and eq. 3."""
    changes, warmup, _ = ARMS[arm]
    arm_cfg = dataclasses.replace(cfg, **changes)
    model = transformer_from(vars(arm_cfg), vocab_size, positions)
    opt, sched = paper_optimizer(model, cfg, rate if warmup else rate_without_warmup)  # sec. 5.3, eq. 3
    return arm_cfg, model, opt, sched


def run_ablations(cfg, rt, argv) -> dict:
    """Table 3 at a CPU budget: one head, no label smoothing, learned positions, and post-LN vs pre-LN without
    warm-up, each against the base model on the same batches for the same steps; dev BLEU and perplexity"""
    check_seq2seq(cfg)
    arms = parse_arms(cfg.arms)
    if cfg.resume:
        raise UserError("the ablations experiment does not resume; run it again (or a subset with --arms)")
    if cfg.beam < 1:
        raise UserError(f"--beam must be at least 1 (1 = greedy), got {cfg.beam}")
    if cfg.steps < 1:
        raise UserError("the ablations train every arm for the same --steps: give --steps >= 1")
    if cfg.test_size < 0 or cfg.max_len < 0:
        raise UserError("--test-size and --max-len must be >= 0")
    d = comparison_data(cfg, rt, "val")
    run = open_run(cfg, rt, MILESTONE, "ablations", argv)
    if rt.is_main:
        data.save_tokenizer(d.tok, run.dir / "tokenizer.json")
        print(f"{lr_line(cfg, lr_record(cfg, schedule=True))}; the no_warmup arms hold that peak from step 1")

    results, signature = {}, None
    for arm in arms:
        seed_everything(cfg.seed)  # each arm starts from the same RNG state, whichever runs first
        arm_cfg, model, opt, sched = build(arm, cfg, d.tok.get_vocab_size(), d.positions)
        model.to(rt.device)
        params = count_params(model)
        try:
            sess, _, _ = fit(arm, arm_cfg, rt, run, d.train, d.valid, model, opt, sched, cfg.clip, "ablations")
        except Diverged as e:  # an arm that blows up is a result, not the end of the experiment
            print(f"{arm}: {e}")
            results[arm] = dict(bleu=0.0, valid_loss=None, valid_perplexity=None, params=params, train_seconds=None,
                                tokens=None, diverged=True, paper_bleu=ARMS[arm][2])
            continue
        test = score(arm, model, d.ids, d.references, d.tok, cfg, rt, run.dir)
        sess.log("dev", bleu=test["bleu"], bleu_lowercase=test["bleu_lowercase"], sentences=d.n,
                 decode_seconds=test["decode_seconds"])
        sess.finish()
        nll = sess.results["valid_loss"]
        results[arm] = dict(bleu=round(test["bleu"], 2), valid_loss=round(nll, 4),
                            valid_perplexity=round(math.exp(min(nll, 50.0)), 2), params=params,
                            train_seconds=sess.card()["train_seconds"], tokens=sess.rate * sess.train_seconds,
                            diverged=False, paper_bleu=ARMS[arm][2])
        signature = test["signature"]

    if rt.is_main:
        bleu = {arm: r["bleu"] for arm, r in results.items() if not r["diverged"]}
        save(ablations_figure(valid_curves(run.dir / "metrics.jsonl", arms), bleu, ablations_title(vars(cfg))),
             run.dir / "ablations.png")
    seconds = sum(r["train_seconds"] or 0.0 for r in results.values())
    tokens = sum(r.pop("tokens") or 0.0 for r in results.values())
    per_arm = {f"{key}_{arm}": value for arm, values in results.items() for key, value in values.items()}
    head = "base" if "base" in results else arms[0]
    card = run.summary(
        model=f"ablations:{','.join(arms)}", dataset=DATASET if d.complete else f"{DATASET}, first {d.n}",
        metric=f"dev BLEU of {head}", value=results[head]["bleu"],
        paper_value=ARMS[head][2], paper_source=TABLE_3 if ARMS[head][2] else None,
        params=max(r["params"] for r in results.values()),
        train_seconds=round(seconds, 2), examples_per_second=round(tokens / seconds, 1) if seconds else 0.0,
        steps=cfg.steps * len(arms), bleu_signature=signature, beam=cfg.beam, alpha=cfg.alpha, dev_sentences=d.n,
        arms=arms, **per_arm, **lr_record(cfg, schedule=True))
    if rt.is_main:
        print(f"\n{'arm':<16} {'params':>10} {'valid NLL':>9} {'PPL':>7} {'dev BLEU':>8} {'paper':>6}")
        for arm, r in results.items():
            paper = f"{r['paper_bleu']:.1f}" if r["paper_bleu"] else "-"
            if r["diverged"]:
                print(f"{arm:<16} {r['params']:>10,} {'diverged':>9} {'-':>7} {'-':>8} {paper:>6}")
                continue
            print(f"{arm:<16} {r['params']:>10,} {r['valid_loss']:>9.3f} {r['valid_perplexity']:>7.2f} "
                  f"{r['bleu']:>8.2f} {paper:>6}")
        print(f"dev BLEU on {d.n} sentences ({signature}), beam {cfg.beam}, {cfg.steps} steps an arm; "
              f"run record: {run.dir}")
    return card
