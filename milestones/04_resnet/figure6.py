"""The paper's Figure 6 drawn from a degradation run's metrics.jsonl: plain nets on the left, residual nets on
the right, one colour per depth; thin lines are the running training error, bold lines the test error.

    curves = read_curves(run_dir / "metrics.jsonl")
    draw(curves, run_dir / "training_error.png", title=title(config, epochs))

`python -m milestones.04_resnet.figures` redraws the committed one from its run record.
"""

import json
from pathlib import Path

from common.plot import pyplot, save

KINDS = (("plain", "plain"), ("resnet", "ResNet"))  # (name prefix, panel title), left to right as in the paper


def read_curves(metrics_path) -> dict:
    """{model: {"train": [(step, error)], "test": [(step, error)]}} from the rows tagged with a model."""
    curves = {}
    for line in Path(metrics_path).read_text().splitlines():
        row = json.loads(line)
        if row.get("split") in ("train", "test") and "model" in row and "error" in row:
            curves.setdefault(row["model"], {"train": [], "test": []})[row["split"]].append(
                (row["step"], row["error"]))
    return curves


def depth_of(name: str) -> int:
    return int("".join(c for c in name if c.isdigit()))


def title(config: dict, epochs: float | None = None) -> str:
    """What a degradation run compares and at which budget, from its config (config.json's "config")."""
    budget = f"{config['steps']:,} steps of {config['batch_size']}" if config.get("steps") else \
        f"{config['epochs']} epochs of {config['batch_size']}"
    if config.get("steps") and epochs:
        budget += f" ({epochs:.1f} epochs)"
    return (f"Figure 6 (He et al. 2015) at preset {config['preset']}: plain vs residual nets on CIFAR-10\n"
            f"{budget}, width {config['width']} (paper: 16), seed {config['seed']}")


def draw(curves: dict, path, title: str = "") -> Path:
    """Write figure(curves, title) as a PNG at `path`."""
    return save(figure(curves, title), path)


def figure(curves: dict, title: str = ""):
    """Two panels (plain | ResNet) of error (%) against iteration, each depth one colour, its legend below the
    panel; a kind with no nets gets no panel."""
    kinds = [(prefix, label) for prefix, label in KINDS if any(m.startswith(prefix) for m in curves)]
    plt = pyplot()
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5.2 * max(1, len(kinds)), 4.6), dpi=120,
                             sharey=True, squeeze=False)
    depths = sorted({depth_of(m) for m in curves})
    colour = {d: plt.get_cmap("tab10")(i) for i, d in enumerate(depths)}  # same depth, same colour
    for ax, (prefix, label) in zip(axes[0], kinds):
        for name in sorted((m for m in curves if m.startswith(prefix)), key=depth_of):
            c, d = curves[name], depth_of(name)
            if c["train"]:
                ax.plot(*zip(*[(s, 100 * e) for s, e in c["train"]]), color=colour[d], linewidth=0.8,
                        label=f"{label}-{d}, training error")
            if c["test"]:
                ax.plot(*zip(*[(s, 100 * e) for s, e in c["test"]]), color=colour[d], linewidth=2.6,
                        marker="o", markersize=3, label=f"{label}-{d}, test error")
        ax.set(title="plain nets (no shortcuts)" if prefix == "plain" else "residual nets (ResNet)", xlabel="iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    axes[0][0].set_ylabel("error (%)  thin: training, bold: test")
    fig.tight_layout()
    if title:  # above the panels' titles (the PNG is cropped to fit it)
        fig.suptitle(title, fontsize=10, y=1.0, va="bottom")
    return fig
