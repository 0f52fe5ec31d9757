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


def compare(runs: str = "runs", fmt: str = "table", wide: bool = False) -> str:
    cards = load_summaries(runs)
    if not cards:
        raise UserError(f"no summary.json under {runs}: finish a training run first")
    header = [title for _, title in COLUMNS]
    rows = [[_fmt(k, c.get(k)) for k, _ in COLUMNS] for c in cards]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([k for k, _ in COLUMNS])
        for c in cards:
            w.writerow([c.get(k, "") for k, _ in COLUMNS])
        return buf.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    if not wide:  # the columns a reader compares; --wide (or csv/markdown) has them all
        keep = [i for i, (k, _) in enumerate(COLUMNS) if k in NARROW]
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
