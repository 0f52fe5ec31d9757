"""The adding problem's figures, drawn from a run's record, and the committed ones:

    python -m milestones.05_lstm.figures     # redraws grad_norm_vs_lag.png and adding_error_vs_length.png
    python -m milestones.05_lstm.figures error_vs_length <adding run dir> <png>

error_vs_length: the fraction of test sequences each net gets wrong at each minimal length T (log axis above
0.1%), with the run's stop rule (--solved-error) as a labelled line. grad_norm_vs_lag: || d h_T / d x_(T-k) || at
initialisation (no training, so any machine redraws it exactly), by adding.grad_norm_vs_lag.
"""

import json
from pathlib import Path

from common.plot import line_figure, outside_legend, pyplot, redraw_main, save
from milestones.compare import command_of

from .adding import grad_norm_vs_lag

NAMES = {"rnn": "Elman RNN", "lstm": "LSTM, forget gate", "lstm1997": "LSTM 1997 (no forget gate)"}


def error_vs_length_figure(results: list, solved_error: float, title: str):
    """results: the adding run's per-(model, T) rows ({"model", "T", "error"}), one line per model."""
    fig, ax = pyplot().subplots(figsize=(7.6, 4.2), dpi=120)
    for kind in dict.fromkeys(r["model"] for r in results):
        rows = sorted((r["T"], 100 * r["error"]) for r in results if r["model"] == kind)
        ax.plot(*zip(*rows), marker="o", linewidth=1.6, label=NAMES.get(kind, kind))
    ax.axhline(100 * solved_error, color="black", linestyle=":", linewidth=1.2,
               label=f"solved: {solved_error:.0%} wrong (--solved-error)")
    ax.set_yscale("symlog", linthresh=0.1)  # log above 0.1%, so an error of 0 is still drawn (on the axis)
    ax.set_ylim(0, 150)
    ax.set(title=title, xlabel="minimal time lag T (sequence length)",
           ylabel="test sequences wrong (%, |error| >= 0.04)")
    ax.set_xticks(sorted({r["T"] for r in results}))
    ax.grid(alpha=0.3, which="both")
    outside_legend(ax)
    return fig


def redraw_error_vs_length(run, png) -> Path:
    """From an adding run's summary.json (its "results") and config.json."""
    card = json.loads((Path(run) / "summary.json").read_text())
    record = json.loads((Path(run) / "config.json").read_text())
    cfg, flags = record["config"], command_of(record).split("--experiment adding ")[-1]  # as it runs today
    title = (f"Adding problem: test error vs length ({flags}), H = {cfg['hidden']}, "
             f"seed {cfg['seed']}\n(each net trained up to {cfg['steps']:,} steps of {cfg['batch_size']} per T, "
             f"forget bias {cfg['forget_bias']:g})")
    return save(error_vs_length_figure(card["results"], cfg["solved_error"], title), png)


def grad_norm_figure(T: int = 200, hidden: int = 64, forget_biases=(1.0, 3.0), seed: int = 0):
    """|| d h_T / d x_(T-k) || against the lag k at initialisation, the RNN and the LSTM cells, log axis."""
    curves = {"Elman RNN": grad_norm_vs_lag("rnn", T, hidden, seed=seed),
              "LSTM 1997 (no forget gate)": grad_norm_vs_lag("lstm", T, hidden, forget_gate=False, seed=seed)}
    for b in forget_biases:
        curves[f"LSTM, forget gate (bias {b:g})"] = grad_norm_vs_lag("lstm", T, hidden, True, b, seed=seed)
    return line_figure({k: (range(T), v) for k, v in curves.items()},
                       f"Gradient reaching back k steps, at initialisation (no training)\n"
                       f"T = {T}, H = {hidden}, seed {seed}, mean over 32 random sequences",
                       "time lag k", "|| d h_T / d x_(T-k) ||  (log)", logy=True)


def redraw_grad_norm(run, png) -> Path:
    """No run needed: the figure is computed at initialisation, in float64."""
    return save(grad_norm_figure(), png)


DRAW = {"grad_norm_vs_lag": redraw_grad_norm, "error_vs_length": redraw_error_vs_length}
COMMITTED = {
    "grad_norm_vs_lag.png": ("grad_norm_vs_lag", None),
    "adding_error_vs_length.png": ("error_vs_length", "results/05_lstm/20261207-021604-adding-rnn-vs-lstm-vs-lstm1997"),
}

if __name__ == "__main__":
    redraw_main(__file__, DRAW, COMMITTED)
