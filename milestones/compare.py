"""`python -m milestones compare`: every run's summary.json, one row each, beside the paper's number."""

import csv
import io
import json
import sys
from pathlib import Path

from common.errors import UserError

COLUMNS = [("milestone", "milestone"), ("model", "model"), ("dataset", "dataset"), ("metric", "metric"),
           ("value", "ours"), ("paper_value", "paper"), ("params", "params"), ("train_seconds", "wall s"),
           ("examples_per_second", "ex/s"), ("device", "device"), ("precision", "precision"),
           ("world_size", "gpus/procs"), ("preset", "preset"), ("run", "run")]


def load_summaries(runs: str) -> list[dict]:
    root = Path(runs)
    if not root.is_dir():
        raise UserError(f"no runs directory at {root} (train something first, or pass --runs DIR)")
    cards = []
    for path in sorted(root.rglob("summary.json")):
        try:
            card = json.loads(path.read_text())
            if not isinstance(card, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:  # a half-written or foreign file is skipped, not fatal
            print(f"warning: skipping {path}: unreadable ({type(e).__name__})", file=sys.stderr)
            continue
        card["run"] = str(path.parent.relative_to(root))
        cards.append(card)
    return sorted(cards, key=lambda c: (c.get("milestone", ""), c.get("model", ""), c["run"]))


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key == "params" and isinstance(v, (int, float)):
        return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{int(v):,}"
    if isinstance(v, float):
        if key in ("train_seconds",):
            return f"{v:.1f}"
        if key == "examples_per_second":
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(v)


def matches(filters, *names: str) -> bool:
    """--filter (table and --plot alike): a run is kept when one of its names (milestone/model, run directory)
    contains one of the substrings; no filters keep every run."""
    return not filters or any(f in name for f in filters for name in names)


def compare(runs: str = "runs", fmt: str = "table", wide: bool = False, columns=(), filters=()) -> str:
    """The table. `columns` adds summary keys as columns after `ours` (e.g. 07's fcd, kid, confident_fraction,
    class_entropy: the same yardstick for every generator); `filters` keeps the matching runs only."""
    cards = [c for c in load_summaries(runs)
             if matches(filters, f"{c.get('milestone', '')}/{c.get('model', '')}", c["run"])]
    if not cards:
        what = f" matching {' or '.join(filters)}" if filters else ""
        raise UserError(f"no summary.json{what} under {runs}: finish a training run first")
    unknown = [k for k in columns if all(k not in c for c in cards)]
    if unknown:
        raise UserError(f"no run here records {', '.join(unknown)} (keys of summary.json, e.g. fcd, test_error)")
    at = [k for k, _ in COLUMNS].index("value") + 1
    cols = COLUMNS[:at] + [(k, k) for k in columns] + COLUMNS[at:]
    header = [title for _, title in cols]
    rows = [[_fmt(k, c.get(k)) for k, _ in cols] for c in cards]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([k for k, _ in cols])
        for c in cards:
            w.writerow([c.get(k, "") for k, _ in cols])
        return buf.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    if not wide:  # the columns a reader compares (and the ones asked for); --wide (or csv/markdown) has them all
        keep = [i for i, (k, _) in enumerate(cols) if k in NARROW or k in columns]
        header, rows = [header[i] for i in keep], [[r[i] for i in keep] for r in rows]
    return format_table(header, rows, width=None if wide else WIDTH)


WIDTH = 100  # a terminal's columns, which the plain tables fit unless --wide
NARROW = ("milestone", "model", "dataset", "metric", "value", "paper_value", "params", "train_seconds")
FLOORS = {"milestone": 12, "model": 22, "metric": 12, "dataset": 12}  # how far a column may be cut before the others


def format_table(header, rows, width: int = None) -> str:
    """Plain-text columns, padded to the widest cell; with `width`, the widest columns are cut (ending in '~')
    until a line fits."""
    rows = [[str(x) for x in r] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    floor = [max(len(h), 6, FLOORS.get(h, 0)) for h in header]
    while width and sum(widths) + 2 * (len(widths) - 1) > width:
        i = max(range(len(widths)), key=lambda j: widths[j] - floor[j])
        if widths[i] <= floor[i]:
            break
        widths[i] -= 1
    cut = lambda x, w: x if len(x) <= w else x[:w - 1] + "~"
    line = lambda r: "  ".join(cut(str(x), w).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


# ---------------------------------------------------------------------------------------------------------
# compare --plot METRIC: learning curves of several runs from their metrics.jsonl, in one PNG
# ---------------------------------------------------------------------------------------------------------

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
            seen.update(f"{split}:{k}" for k, v in row.items() if _number(v) and k not in ("step", "epoch", "time"))
            y, at = row.get(name), row.get(x)
            if x == "time" and _number(at):
                if at < last_t:  # a resumed run: its clock started again
                    offset += last_t
                last_t = at
                at = at + offset
            if (want_split and split != want_split) or not _number(y) or not _number(at):
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


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_curves(runs: str = "runs", metric: str = "loss", x: str = "step", filters=(), out=None) -> Path:
    """compare --plot: the curves in one PNG (default RUNS/compare-<metric>.png); returns its path."""
    from common.plot import overlay_plot

    lines = curves(runs, metric, x, filters)
    out = Path(out) if out else Path(runs) / f"compare-{metric.replace(':', '-')}.png"
    xlabel = {"step": "step", "epoch": "epoch", "time": "wall-clock seconds"}[x]
    return overlay_plot(lines, out, title=f"{metric} by {x}", xlabel=xlabel, ylabel=metric)

