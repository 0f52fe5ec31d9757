"""`python -m milestones compare --plot METRIC`: learning curves from the runs' metrics.jsonl, overlaid in one PNG."""

import json
from pathlib import Path

from common.errors import UserError

from .compare import is_number, matches

TAGS = ("model", "arm", "T")  # row fields that tell apart the nets of a multi-net run (Session's tag=)


def run_label(run_dir: Path) -> str:
    """milestone/model from the run's config.json (written when it starts), else from its path."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        return f"{config['milestone']}/{config['model']}"
    except (OSError, ValueError, KeyError, TypeError):
        model = run_dir.name.split("-", 2)[-1] if run_dir.name.count("-") >= 2 else run_dir.name
        return f"{run_dir.parent.name}/{model}"


def read_rows(path: Path) -> list[dict]:
    """metrics.jsonl's rows; a line that does not parse (a run killed mid-write) is skipped with a warning."""
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        print(f"warning: {path}: skipped {bad} unreadable line(s)", file=sys.stderr)
    return rows


def find_runs(runs: str) -> list[tuple[str, Path]]:
    """(label, run directory) of every run under `runs` with a metrics.jsonl. Labels are milestone/model, made
    unique with the run directory's date and time."""
    root = Path(runs)
    if not root.is_dir():
        raise UserError(f"no runs directory at {root} (train something first, or pass --runs DIR)")
    found = [(run_label(p.parent), p.parent) for p in sorted(root.rglob("metrics.jsonl"))]
    if not found:
        raise UserError(f"no metrics.jsonl under {root}: train something first")
    counts = {}
    for label, _ in found:
        counts[label] = counts.get(label, 0) + 1
    stamp = lambda d: "-".join(d.name.split("-")[:2])  # <date>-<time> of the run directory's name
    return [(label if counts[label] == 1 else f"{label} ({stamp(d)})", d) for label, d in found]


def parse_metric(metric: str) -> tuple[str | None, str]:
    """'valid:loss' -> ('valid', 'loss'); 'loss' -> (None, 'loss'): every split that logs it."""
    split, _, name = metric.rpartition(":")
    if not name:
        raise UserError(f"--plot needs a metric name such as loss or valid:loss, got {metric!r}")
    return split or None, name


def curves(runs: str, metric: str, x: str = "step", filters=()) -> dict:
    """{label: (xs, ys)}: one line per run, tag value (multi-net runs) and split, in order of x. x is step, epoch
    or time (wall seconds; a resumed run's clock, which restarts at 0, is continued). With `filters`, only the
    runs whose label or directory contains one of them, or the nets of a run whose tag value does."""
    if x not in ("step", "epoch", "time"):
        raise UserError(f"--x must be step, epoch or time, got {x!r}")
    want_split, name = parse_metric(metric)
    root = Path(runs)
    lines, seen, matched, found = {}, set(), 0, find_runs(runs)
    for label, run_dir in found:
        whole = matches(filters, label, str(run_dir.relative_to(root)))
        per_line, offset, last_t = {}, 0.0, 0.0
        for row in read_rows(run_dir / "metrics.jsonl"):
            tags = tuple(f"{t}={row[t]}" for t in TAGS[1:] if t in row)  # model is shown as [name]
            if not whole and not any(f in str(row.get(t)) for f in filters for t in TAGS if t in row):
                continue
            matched += 1
            split = row.get("split")
            seen.update(f"{split}:{k}" for k, v in row.items() if is_number(v) and k not in ("step", "epoch", "time"))
            y, at = row.get(name), row.get(x)
            if x == "time" and is_number(at):
                if at < last_t:  # a resumed run: its clock started again
                    offset += last_t
                last_t = at
                at = at + offset
            if (want_split and split != want_split) or not is_number(y) or not is_number(at):
                continue
            per_line.setdefault((row.get("model"), tags, split), {})[at] = y  # a step logged twice: the last
        splits = {k[2] for k in per_line}
        for (model, tags, split), points in per_line.items():
            parts = [label + (f" [{model}]" if model and not label.endswith("/" + str(model)) else "")]
            parts += list(tags) + ([split] if len(splits) > 1 and not want_split else [])
            xs = sorted(points)
            lines[" ".join(parts)] = (xs, [points[v] for v in xs])
    if filters and not matched:
        raise UserError(f"no run under {root} matches --filter {' '.join(filters)} ({len(found)} runs there)")
    if not lines:
        known = ", ".join(sorted(seen)[:15]) + (", ..." if len(seen) > 15 else "")
        raise UserError(f"no chosen run logs {metric!r} against {x}; they log: {known or 'nothing'}")
    return lines


def plot_curves(runs: str = "runs", metric: str = "loss", x: str = "step", filters=(), out=None) -> Path:
    """compare --plot: the curves in one PNG (default RUNS/compare-<metric>.png); returns its path."""
    from common.plot import overlay_plot

    lines = curves(runs, metric, x, filters)
    out = Path(out) if out else Path(runs) / f"compare-{metric.replace(':', '-')}.png"
    xlabel = {"step": "step", "epoch": "epoch", "time": "wall-clock seconds"}[x]
    return overlay_plot(lines, out, title=f"{metric} by {x}", xlabel=xlabel, ylabel=metric)

