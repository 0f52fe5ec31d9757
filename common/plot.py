"""Line plots for experiments (training curves, gradient norms), saved as PNG without a display."""

from pathlib import Path


def line_plot(series: dict, path, title: str = "", xlabel: str = "", ylabel: str = "", logy: bool = False) -> Path:
    """series: {label: (xs, ys)}. Writes a PNG and returns its path."""
    return save(line_figure(series, title, xlabel, ylabel, logy), path)


def line_figure(series: dict, title: str = "", xlabel: str = "", ylabel: str = "", logy: bool = False):
    """The Figure of `line_plot`: one line per {label: (xs, ys)}, each its own colour, the legend to the right
    of the axes (never over the data)."""
    fig, ax = pyplot().subplots(figsize=(7.6, 4.2), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=label, linewidth=1.6)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        outside_legend(ax)
    return fig


def outside_legend(ax, **kw) -> None:
    """The legend to the right of `ax`, outside it, so it covers no line (save() keeps it in the PNG)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False, **kw)


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures are written to files, no screen needed."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    return plt


def save(fig, path) -> Path:
    """Write `fig` as a PNG at `path` (its folder made if missing), free its memory, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    fig.clf()
    pyplot().close(fig)
    return path


def overlay_plot(series: dict, path, title: str = "", xlabel: str = "", ylabel: str = "") -> Path:
    """Many labelled curves {label: (xs, ys)} on one axis, the legend below it (it grows with the lines, so
    long labels never cover the curves). Writes a PNG and returns its path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=label, linewidth=1.4, marker="." if len(xs) < 30 else None)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False,
              ncol=1 if max(map(len, series)) > 45 else 2)
    return save(fig, path)


def labelled_scatter(panels: list, path, title: str = "", xlabel: str = "") -> Path:
    """Side-by-side panels of labelled points on a log y axis. panels: [(ylabel, {series: [(x, y, text), ...]})];
    each series gets one marker style, each point its text (moved up or down until it covers no other label).
    Writes a PNG and returns its path."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), dpi=120, squeeze=False)
    markers = ["o", "s", "^", "D", "v"]
    for ax, (ylabel, groups) in zip(axes[0], panels):
        for i, (name, points) in enumerate(groups.items()):
            if points:
                xs, ys, _ = zip(*points)
                ax.scatter(xs, ys, marker=markers[i % len(markers)], s=36, label=name, zorder=3,
                           facecolors="none" if i else None, edgecolors=None if not i else f"C{i}")
        ax.set_yscale("log")
        xs = [p[0] for points in groups.values() for p in points]
        if xs:  # room on the right for the labels of the last points
            span = max(xs) - min(xs) or 1.0
            ax.set_xlim(min(xs) - 0.05 * span, max(xs) + 0.2 * span)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    for ax, (_, groups) in zip(axes[0], panels):
        _place_labels(ax, groups)
    return save(fig, path)


def _place_labels(ax, groups: dict, fontsize: float = 7) -> None:
    """Annotate every point, each label at the nearest vertical offset where it overlaps no earlier one."""
    px_per_pt = ax.figure.dpi / 72
    h, w_char = 1.25 * fontsize, 0.55 * fontsize  # a label's height and width of one character, in points
    right = ax.get_window_extent().x1 / px_per_pt
    taken = []  # (x0, x1, y0, y1) in display points of the labels placed so far
    overlaps = lambda r: any(r[0] < t[1] and t[0] < r[1] and r[2] < t[3] and t[2] < r[3] for t in taken)
    for i, points in enumerate(groups.values()):
        for x, y, text in sorted(points, key=lambda p: (p[0], -p[1])):
            px, py = (v / px_per_pt for v in ax.transData.transform((x, y)))
            w = w_char * len(text)
            dx = 4 if px + 4 + w <= right else -4 - w  # to the left of a point near the right edge
            for k in (0, -1, 1, -2, 2, -3, 3, 0):
                rect = (px + dx, px + dx + w, py + 2 + k * h, py + 2 + (k + 1) * h)
                if not overlaps(rect):
                    break
            taken.append(rect)
            moved = dict(arrowprops=dict(arrowstyle="-", lw=0.5, color="0.6")) if k or dx < 0 else {}
            ax.annotate(text, (x, y), xytext=(dx, 2 + k * h), textcoords="offset points", fontsize=fontsize,
                        color=f"C{i}" if i else "black", va="bottom", **moved)


def redraw_main(module_file, draw: dict, committed: dict, argv=None) -> list:
    """The command line of a milestone's figures.py. draw: {figure kind: draw(run dir, png) -> png};
    committed: {png name in the milestone's folder: (figure kind, run dir from the repository root, or None)}.
    With no arguments it redraws every committed figure from its run; `<kind> <run dir> <png>` draws one figure
    of that kind from any run."""
    import sys
    from common.errors import UserError, exit_on_user_error

    here = Path(module_file).resolve().parent
    root = here.parent.parent
    argv = sys.argv[1:] if argv is None else argv

    def go():
        if not argv:
            jobs = [(kind, run and root / run, here / png) for png, (kind, run) in committed.items()]
        elif len(argv) == 3 and argv[0] in draw:
            jobs = [(argv[0], Path(argv[1]), Path(argv[2]))]
        else:
            raise UserError(f"give no arguments (redraw {', '.join(committed) or 'nothing committed'}) or "
                            f"<kind> <run dir> <png>, <kind> one of: {', '.join(draw)}")
        for kind, run, png in jobs:
            if run is not None and not run.is_dir():
                raise UserError(f"{run} is not a run directory")
            print(draw[kind](run, png))
        return [png for _, _, png in jobs]
    return exit_on_user_error(go)
