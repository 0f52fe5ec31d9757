"""Where each head looks: the encoder-decoder attention of the last decoder layer, one heat map per head. A translate
run draws it at its end (train.py); figures.py redraws the committed one from a run."""

import math
from pathlib import Path

import torch

from common.plot import pyplot, save

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
