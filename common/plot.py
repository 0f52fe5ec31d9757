"""Line plots for experiments (training curves, gradient norms), saved as PNG without a display."""

from pathlib import Path


def line_plot(series: dict, path, title: str = "", xlabel: str = "", ylabel: str = "", logy: bool = False) -> Path:
    """series: {label: (xs, ys)}. Writes a PNG and returns its path."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=label, linewidth=1.6)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
