"""Every committed figure reads alone (issue 25, item 6): each PNG in a milestone's folder is shown by its
NOTES.md and redrawn by its figures.py from a committed run record; the plotting functions give every figure a
title, labelled axes, labelled lines and a legend that covers no data. No training: the figures are drawn from
small made-up inputs or from the committed records."""

import importlib
import re
from pathlib import Path

import pytest
import torch

from common.plot import line_figure, pyplot

ROOT = Path(__file__).resolve().parents[1]
MILESTONES = sorted(p for p in (ROOT / "milestones").iterdir() if (p / "NOTES.md").is_file())
WITH_FIGURES = [p for p in MILESTONES if list(p.glob("*.png"))]


def figures(folder: Path):
    return importlib.import_module(f"milestones.{folder.name}.figures")


def embedded(notes: str) -> set:
    """The files a markdown text shows as images: ![caption](file)."""
    return set(re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", notes))


def not_shown(folder: Path) -> list:
    """The PNGs in `folder` that its NOTES.md does not show (naming one in the prose is not showing it)."""
    notes = (folder / "NOTES.md").read_text() if (folder / "NOTES.md").is_file() else ""
    return sorted(p.name for p in folder.glob("*.png") if p.name not in embedded(notes))


def problems(fig) -> list:
    """What keeps `fig` from reading alone: no title; a plot without axis labels; an unlabelled line; a legend
    over a data point; an image panel without a title."""
    fig.canvas.draw()
    out = []
    suptitle = fig.get_suptitle()
    if not suptitle and not any(ax.get_title() for ax in fig.axes):
        out.append("no title")
    for i, ax in enumerate(fig.axes):
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
        if ax.images and not ax.get_title():
            out.append(f"axes {i}: an image without a panel title")
        if not lines:
            continue
        if not ax.get_xlabel() or not (ax.get_ylabel() or any(a.get_ylabel() for a in fig.axes)):
            out.append(f"axes {i}: an unlabelled axis")
        if len(lines) > 1 and any(ln.get_label().startswith("_") for ln in lines):
            out.append(f"axes {i}: a line without a label")
        legend = ax.get_legend()
        if len(lines) > 1 and legend is None:
            out.append(f"axes {i}: several lines, no legend")
        if legend is not None:
            box = legend.get_window_extent()
            for ln in lines:
                xy = ax.transData.transform(ln.get_xydata())  # (n, 2) display coordinates
                if any(box.contains(x, y) for x, y in xy):
                    out.append(f"axes {i}: the legend covers the line {ln.get_label()!r}")
    pyplot().close(fig)
    return out


def test_not_shown_finds_a_png_its_notes_only_name(tmp_path):
    (tmp_path / "NOTES.md").write_text("![a caption](shown.png)\n\nThe run writes `named.png` too.\n")
    for name in ("shown.png", "named.png"):
        (tmp_path / name).write_bytes(b"\x89PNG")
    assert not_shown(tmp_path) == ["named.png"]


def test_problems_sees_a_figure_that_does_not_read_alone():
    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [0, 1], label="a")
    ax.plot([0, 1], [1, 0])  # no label, and no title nor axis labels anywhere
    assert problems(fig) == ["no title", "axes 0: an unlabelled axis", "axes 0: a line without a label",
                             "axes 0: several lines, no legend"]
    fig, ax = pyplot().subplots()
    for k in range(3):  # a legend in the middle of the data
        ax.plot([0, 0.5, 1], [0.5, 0.5 + k * 0.01, 0.5], label=f"line {k}")
    ax.set(title="t", xlabel="x", ylabel="y")
    ax.legend(loc="center")
    assert any("the legend covers" in p for p in problems(fig))


@pytest.mark.parametrize("folder", MILESTONES, ids=lambda p: p.name)
def test_every_committed_figure_is_shown_by_its_notes(folder):
    assert not_shown(folder) == []
    missing = [f for f in embedded((folder / "NOTES.md").read_text()) if "://" not in f and not (folder / f).is_file()]
    assert missing == []  # and every figure the notes show is there


@pytest.mark.parametrize("folder", WITH_FIGURES, ids=lambda p: p.name)
def test_every_committed_figure_is_redrawn_from_a_committed_run_record(folder):
    fig = figures(folder)
    assert sorted(fig.COMMITTED) == sorted(p.name for p in folder.glob("*.png"))
    for png, (kind, run) in fig.COMMITTED.items():
        assert kind in fig.DRAW, png
        if run is not None:  # a run under results/, or a local run whose record is committed under its name
            record = ROOT / "results" / folder.name / Path(run).name
            assert (record / "summary.json").is_file() and (record / "config.json").is_file(), png


def test_line_figure_keeps_its_legend_off_the_lines():
    series = {f"arm {k}": (range(10), [k + i for i in range(10)]) for k in range(4)}
    assert problems(line_figure(series, "four arms", "step", "loss")) == []


FIG1 = {"relu": {"lr": 0.004, "rates": {"0.004": [0.6, 0.4, 0.24], "0.016": [0.7, 0.6, 0.5]}},
        "tanh": {"lr": 0.016, "rates": {"0.004": [0.67, 0.58, 0.5], "0.016": [0.63, 0.54, 0.49]}}}


def test_figure_1_gives_every_rate_its_own_colour_and_labels_the_target():
    mod = importlib.import_module("milestones.03_alexnet.figures")
    fig = mod.figure_1_figure(FIG1, 0.25, mod.NETS["four-layer"], "quick", 1)
    ax = fig.axes[0]
    curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    assert len({ln.get_color() for ln in curves}) == 4  # one colour per (activation, rate)
    assert "25%" in ax.get_lines()[-1].get_label()  # the reference line is in the legend
    assert "preset quick" in ax.get_title() and "seed 1" in ax.get_title()
    assert problems(fig) == []


def test_figure_6_titles_the_budget_of_the_config():
    mod = importlib.import_module("milestones.04_resnet.figure6")
    curves = {m: {"train": [(s, 0.9 - s / 1e4) for s in range(0, 400, 10)], "test": [(100, 0.8), (400, 0.7)]}
              for m in ("plain20", "plain56", "resnet20", "resnet56")}
    config = dict(preset="quick", steps=4000, batch_size=64, width=4, seed=0)
    fig = mod.figure(curves, mod.title(config, 5.12))
    assert "4,000 steps of 64 (5.1 epochs), width 4" in fig.get_suptitle() and "seed 0" in fig.get_suptitle()
    assert [ax.get_title() for ax in fig.axes] == ["plain nets (no shortcuts)", "residual nets (ResNet)"]
    assert problems(fig) == []


def test_adding_figures_read_alone():
    mod = importlib.import_module("milestones.05_lstm.figures")
    rows = [dict(model=m, T=T, error=e) for m, e in (("rnn", 0.85), ("lstm", 0.0), ("lstm1997", 0.006))
            for T in (10, 25, 50)]
    assert problems(mod.error_vs_length_figure(rows, 0.01, "adding, preset quick")) == []
    assert problems(mod.grad_norm_figure(T=12, hidden=4)) == []


def test_06_figures_read_alone():
    mod = importlib.import_module("milestones.06_transformer.figures")
    weights = torch.softmax(torch.randn(4, 5, 6), -1)  # (h, T, S)
    fig = mod.attention_figure(weights, list("abcdef"), list("vwxyz"), "cross-attention")
    assert [ax.get_xlabel() for ax in fig.axes] == ["source pieces"] * 4 and fig.axes[0].get_ylabel()
    assert problems(fig) == []
    curves = {"base": ([100, 200], [4.0, 3.5]), "one_head": ([100, 200], [4.1, 3.7])}
    fig = mod.ablations_figure(curves, {"base": 21.5}, mod.ablations_title(
        dict(preset="quick", steps=200, batch_tokens=6000, seed=0)))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["base: dev BLEU 21.50 (paper 25.8)",
                                                                             "one_head"]
    assert problems(fig) == []


def test_sample_grids_title_every_panel():
    mod = importlib.import_module("milestones.07_vae_gan_diffusion.figures")
    fig = mod.grids_figure({"minimax": torch.rand(16, 1, 28, 28), "non-saturating": torch.rand(16, 1, 28, 28)},
                           "gan_loss, preset quick, seed 0")
    assert [ax.get_title() for ax in fig.axes] == ["minimax", "non-saturating"]
    assert problems(fig) == []


@pytest.mark.parametrize("milestone, png", [("03_alexnet", "relu_vs_tanh_18pct_seed0.png"),
                                            ("04_resnet", "figure6_quick_4000steps_width4_seed0.png"),
                                            ("05_lstm", "adding_error_vs_length.png"),
                                            ("06_transformer", "vs_lstm.png")])
def test_a_committed_figure_redraws_from_its_record(milestone, png, tmp_path):
    mod = figures(ROOT / "milestones" / milestone)
    kind, run = mod.COMMITTED[png]
    out = mod.DRAW[kind](ROOT / run, tmp_path / png)
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 20_000
