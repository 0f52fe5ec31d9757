"""The arms of a multi-arm run, one row each, for `compare`.

An experiment that trains several nets into one run directory (05's adding problem, 04's degradation, 03's
ablations, 06's comparisons, 07's gan_loss and dcgan_beta1) writes one card, whose headline is one number (often a
difference); the comparison the course is built on is between its arms. `rows(card)` splits such a card into one
row per arm, each carrying the experiment it belongs to, from the fields each experiment records. A card of one net
is one row.

The readers here are per experiment because each experiment records its arms in its own shape; they read old
records too, so a committed card never has to be rewritten to be compared.
"""

import re


def _base(card: dict, arm: str, model: str, metric: str, value, **extra) -> dict:
    row = {k: v for k, v in card.items() if not isinstance(v, (dict, list)) or k == "machine"}
    row.update(dict(model=model, arm=arm, metric=metric, value=value, paper_value=None, paper_source=None), **extra)
    return row


def _adding(card):
    """05 adding: each net kind at the longest lag T, at its best rate."""
    results = card.get("results") or []
    if not results:
        return None
    T = max(r["T"] for r in results)
    out = []
    for r in results:
        if r["T"] != T:
            continue
        paper = 1 / 2560 if T == 100 and r["model"] == "lstm" else None
        out.append(_base(card, r["model"], r["model"], f"test_error at T={T}", r["error"], params=r.get("params", card.get("params")),
                         train_seconds=r.get("seconds"), paper_value=paper,
                         paper_source=card.get("paper_source") if paper else None))
    return out


def _degradation(card):
    """04 degradation: each net's final training error (Figure 6)."""
    train = card.get("train_error")
    if not isinstance(train, dict):
        return None
    params = card.get("params_per_model") or {}
    return [_base(card, n, n, "train_error", v, params=params.get(n, card.get("params")), train_seconds=None)
            for n, v in train.items()]


def _alexnet_arms(card):
    """03 ablations / groups: each arm's test error."""
    arms = card.get("arms")
    if not isinstance(arms, dict):
        return None
    return [_base(card, a, a, "test_error", r.get("test_error"), params=r.get("params"), train_seconds=None)
            for a, r in arms.items()]


def _relu_vs_tanh(card):
    """03 relu_vs_tanh: epochs each activation took to the target training error at its fastest rate."""
    if not isinstance(card.get("relu"), dict):
        return None
    target = re.search(r"(\d+%)", card.get("metric", "")) or re.search(r"(\d+)pct", card.get("metric", ""))
    metric = f"epochs to {target.group(1) if target else 'target'} train_error"
    return [_base(card, a, f"{a} cnn", metric, card[a].get("epochs"), train_seconds=None,
                  lr=card[a].get("lr")) for a in ("relu", "tanh") if isinstance(card.get(a), dict)]


def _per_arm_keys(card, arms, value_key, metric, paper_key=None):
    """06 ablations / vs_rnn: fields recorded as <key>_<arm>."""
    out = []
    for a in arms:
        value = None if card.get(f"diverged_{a}") else card.get(f"{value_key}_{a}")
        out.append(_base(card, a, a, metric, value, params=card.get(f"params_{a}", card.get("params")),
                         train_seconds=card.get(f"train_seconds_{a}"),
                         paper_value=card.get(f"{paper_key}_{a}") if paper_key else None,
                         diverged=bool(card.get(f"diverged_{a}"))))
    return out


def _ablations06(card):
    arms = card.get("arms")
    if not isinstance(arms, list):
        return None
    return _per_arm_keys(card, arms, "bleu", "dev BLEU", "paper_bleu")


def _vs_rnn(card):
    return _per_arm_keys(card, ("transformer", "rnn"), "bleu", "BLEU")


def _vs_lstm(card):
    return [_base(card, a, a, "val_loss (nats/char)",
                  card.get(f"{a}_val_loss"), params=card.get(f"{a}_params"),
                  train_seconds=card.get(f"{a}_seconds")) for a in ("gpt", "lstm")]


def _generators(card):
    """07 gan_loss / dcgan_beta1: each arm's classifier FID (and the rest of the yardstick as extra keys)."""
    arms = card.get("arms")
    if not isinstance(arms, dict):
        return None
    out = []
    for a, c in arms.items():
        row = _base(card, a, f"{card.get('model', '')}:{a}", "classifier_fid", c.get("fcd"),
                    params=c.get("params"), train_seconds=c.get("train_seconds"))
        row.update({k: c[k] for k in ("kid", "confident_fraction", "class_entropy") if k in c})
        out.append(row)
    return out


def _ablations(card):
    """03's ablations record their arms as a dict of rows, 06's as a list of names."""
    return _alexnet_arms(card) if isinstance(card.get("arms"), dict) else _ablations06(card)


READERS = {  # experiment (config.json's) -> reader
    "adding": _adding, "degradation": _degradation, "ablations": _ablations, "groups": _alexnet_arms,
    "relu_vs_tanh": _relu_vs_tanh, "vs_rnn": _vs_rnn, "vs_lstm": _vs_lstm, "gan_loss": _generators,
    "dcgan_beta1": _generators,
}


def rows(card: dict) -> list[dict]:
    """One row per arm of a multi-arm card (each with `arm` and `experiment`), or [card] for a one-net run."""
    reader = READERS.get(card.get("experiment"))
    split = reader(card) if reader else None
    return split if split else [card]
