"""Where each head looks: the encoder-decoder attention of the last decoder layer, one panel per head; and the
figures of the vs_lstm and ablations experiments, redrawn from their runs."""

import json
import math
from pathlib import Path

import torch

from common.plot import line_figure, pyplot, redraw_main, save

from . import data

MAX_ROWS = 40  # output tokens shown (an untrained model may write up to source length + 50)


@torch.no_grad()
def cross_attention(model, src_ids, out_ids) -> torch.Tensor:
    """(h, T, S) weights of the last decoder layer's cross-attention while the model reads its own output
    `out_ids` (without <bos>/<eos>) for the source `src_ids` (ending with <eos>), teacher-forced."""
    device = next(model.parameters()).device
    src = torch.as_tensor(src_ids, dtype=torch.long, device=device)[None]  # (1, S)
    tgt_in = torch.tensor([[data.BOS, *out_ids]], dtype=torch.long, device=device)  # (1, T)
    layer = model.decoder[-1].cross_attn
    was_training = model.training
    model.eval()
    layer.keep_weights = True
    try:
        memory, src_keep = model.encode(src)
        model.decode(tgt_in, memory, src_keep)
        weights = layer.last_weights[0].float().cpu()  # (h, T, S): row t is the query predicting token t + 1
    finally:
        layer.keep_weights, layer.last_weights = False, None
        model.train(was_training)
    return weights


def cross_attention_grid(model, src_ids, out_ids, tokenizer, path, title: str = "") -> Path:
    """A PNG with one heat map per head: rows the output tokens, columns the source tokens."""
    src_ids = [int(i) for i in src_ids]
    out_ids = [int(i) for i in out_ids][:MAX_ROWS]
    weights = cross_attention(model, src_ids, out_ids)  # (h, T, S)
    piece = lambda i: "<eos>" if i == data.EOS else tokenizer.decode([i]).strip() or "_"
    rows = [piece(i) for i in out_ids] + ["<eos>"]  # the query at row t predicts output token t
    return save(attention_figure(weights, [piece(i) for i in src_ids], rows, title), path)


def attention_figure(weights: torch.Tensor, cols: list, rows: list, title: str = ""):
    """(h, T, S) attention weights -> one grey heat map per head (black = 1), the source pieces along the x axis,
    the output pieces down the y axis."""
    h = weights.shape[0]
    ncol = min(4, h)
    nrow = math.ceil(h / ncol)
    size = 0.22 * max(len(cols), len(rows)) + 1.5
    fig, axes = pyplot().subplots(nrow, ncol, figsize=(ncol * size, nrow * size + 0.6), dpi=110, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= h:
            ax.axis("off")
            continue
        ax.imshow(weights[k].numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_title(f"head {k + 1}", fontsize=9)
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xlabel("source pieces", fontsize=8)
        if k % ncol == 0:
            ax.set_ylabel("output pieces (the query predicting each)", fontsize=8)
    fig.tight_layout()
    fig.suptitle(title or "Cross-attention of the last decoder layer, one panel per head (black: weight 1)",
                 fontsize=9, y=1.0, va="bottom")
    return fig


def attention_title(cfg: dict, source: str, translation: str) -> str:
    """What a translate run's cross-attention figure shows, from its config."""
    layers = f"{cfg['layers']}+{cfg.get('decoder_layers') or cfg['layers']}"
    return (f"Cross-attention of the last decoder layer, one panel per head (black: weight 1)\n"
            f"Transformer {layers} layers x {cfg['d_model']}, {cfg['heads']} heads, translate preset "
            f"{cfg['preset']}, seed {cfg['seed']}\nsource (test sentence 1): {source}\n"
            f"its translation (beam {cfg['beam']}): {translation}")


def redraw_cross_attention(run, png) -> Path:
    """The figure a translate run draws, again, from its checkpoint (its averaged weights where it kept them) and
    tokenizer: the first test sentence, translated by beam search, then read teacher-forced."""
    from common.checkpoint import load_checkpoint, restore

    from . import decode
    from .train import transformer_from

    run = Path(run)
    state = load_checkpoint(str(run))
    cfg = state["config"]
    tok = data.load_tokenizer(run / "tokenizer.json")
    model = transformer_from({**cfg, "dropout": 0.0}, state["vocab_size"], state["max_len"])
    averaged = run / "averaged.pt"
    weights = torch.load(averaged, map_location="cpu", weights_only=True) if averaged.is_file() else state
    restore({"model": weights["model"]}, model)
    source = data.read_multi30k(cfg.get("data_dir"), download=False)["test"][0][0]
    src = data.encode(tok, [source])[0] + [data.EOS]
    (hyp,) = decode.translate(model, [src], data.BOS, data.EOS, data.PAD, cfg["beam"], cfg["alpha"])
    return cross_attention_grid(model, src, hyp, tok, png, attention_title(cfg, source, data.decode_ids(tok, hyp)))


def redraw_vs_lstm(run, png) -> Path:
    """vs_lstm's figure from its summary.json (both nets' validation curves) and config.json."""
    from .vs_lstm import plot_curves

    card = json.loads((Path(run) / "summary.json").read_text())
    cfg = json.loads((Path(run) / "config.json").read_text())["config"]
    gpt, lstm = card["model"].split(":")[1].split(",")
    curves = {f"{gpt} ({card['gpt_params']:,} params)": card["gpt_curve"],
              f"{lstm} ({card['lstm_params']:,} params)": card["lstm_curve"]}
    return plot_curves(curves, png, card["budget_clock"], vs_lstm_title(cfg, card["budget_clock"]))


def vs_lstm_title(cfg: dict, clock: str) -> str:
    limit = f"{cfg['budget_seconds']:g} {clock} s each" if cfg["budget_seconds"] else \
        f"{cfg['steps'] or 'all'} steps each"
    return (f"Tiny Shakespeare, GPT vs LSTM at equal parameters: validation loss\n"
            f"preset {cfg['preset']}, {limit}, batch {cfg['batch_size']} x {cfg['context']}, seed {cfg['seed']}")


def ablations_figure(curves: dict, bleu: dict, title: str):
    """Validation NLL against steps, one line per Table 3 arm, each labelled with its dev BLEU (and the paper's,
    where Table 3 has one)."""
    from .ablations import ARMS

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


def redraw_ablations(run, png) -> Path:
    """The ablations figure from a run's metrics.jsonl (validation curves, each arm's dev BLEU) and config.json."""
    from .ablations import parse_arms, valid_curves

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
    "cross_attention.png": ("cross_attention", "runs/qB/06_transformer/20261207-023729-transformer-3+3x256-h4"),
    "vs_lstm.png": ("vs_lstm", "results/06_transformer/20261207-025503-vs_lstm-gpt-2x128-lstm-2x156"),
}

if __name__ == "__main__":
    redraw_main(__file__, DRAW, COMMITTED)
