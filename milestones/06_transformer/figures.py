"""The committed figures of 06, redrawn from their runs: where each head looks (a translate run's cross-attention,
drawn by cross_attention.py), and the figures of the vs_lstm and ablations experiments (drawn by those modules).
The experiments draw their own figure at the end of a run; this module only reads runs back.

    python -m milestones.06_transformer.figures                          # redraws the committed figures
    python -m milestones.06_transformer.figures <kind> <run dir> <png>   # one, from any run of that kind
"""

import json
from pathlib import Path

from common.checkpoint import load_checkpoint
from common.plot import redraw_main, save

from . import data, decode
from .ablations import ablations_figure, ablations_title, parse_arms, valid_curves
from .cross_attention import attention_figure, attention_title, cross_attention_grid  # noqa: F401 (the drawing)
from .sample import trained_transformer
from .vs_lstm import plot_curves, vs_lstm_title


def redraw_cross_attention(run, png) -> Path:
    """The figure a translate run draws, again, from its checkpoint (its averaged weights where it kept them) and
    tokenizer: the first test sentence, translated by beam search, then read teacher-forced."""
    run = Path(run)
    state = load_checkpoint(str(run))
    cfg = state["config"]
    tok, model = trained_transformer(state, run)
    source = data.read_multi30k(cfg.get("data_dir"), download=False)["test"][0][0]
    src = data.encode(tok, [source])[0] + [data.EOS]
    (hyp,) = decode.translate(model, [src], data.BOS, data.EOS, data.PAD, cfg["beam"], cfg["alpha"])
    return cross_attention_grid(model, src, hyp, tok, png, attention_title(cfg, source, data.decode_ids(tok, hyp)))


def redraw_vs_lstm(run, png) -> Path:
    """vs_lstm's figure from its summary.json (both nets' validation curves) and config.json."""
    card = json.loads((Path(run) / "summary.json").read_text())
    cfg = json.loads((Path(run) / "config.json").read_text())["config"]
    gpt, lstm = card["model"].split(":")[1].split(",")
    curves = {f"{gpt} ({card['gpt_params']:,} params)": card["gpt_curve"],
              f"{lstm} ({card['lstm_params']:,} params)": card["lstm_curve"]}
    return plot_curves(curves, png, card["budget_clock"], vs_lstm_title(cfg, card["budget_clock"]))


def redraw_ablations(run, png) -> Path:
    """The ablations figure from a run's metrics.jsonl (validation curves, each arm's dev BLEU) and config.json."""
    run = Path(run)
    cfg = json.loads((run / "config.json").read_text())["config"]
    arms = parse_arms(cfg["arms"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    bleu = {r["model"]: r["bleu"] for r in rows if r.get("split") == "dev" and "bleu" in r}
    return save(ablations_figure(valid_curves(run / "metrics.jsonl", arms), bleu, ablations_title(cfg)), png)


# `python -m milestones.06_transformer.figures` redraws the committed figures from their runs;
# `... <kind> <run dir> <png>` draws one from any run of that kind (ablations: from its metrics.jsonl).
DRAW = {"cross_attention": redraw_cross_attention, "vs_lstm": redraw_vs_lstm, "ablations": redraw_ablations}
COMMITTED = {
    "cross_attention.png": ("cross_attention", "runs/avx2/06_transformer/20261207-072933-transformer-2+2x128-h4"),
    "vs_lstm.png": ("vs_lstm", "results/06_transformer/20261207-025503-vs_lstm-gpt-2x128-lstm-2x156"),
    "ablations_quick_seed0.png": ("ablations", "results/06_transformer/20261207-040334-ablations"),
}

if __name__ == "__main__":
    redraw_main(__file__, DRAW, COMMITTED)
