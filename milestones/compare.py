"""`python -m milestones compare`: every run's summary.json, one row each, beside the paper's number."""

import csv
import io
import json
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
        except (OSError, json.JSONDecodeError):
            continue  # a half-written or foreign file is skipped, not fatal
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


def compare(runs: str = "runs", fmt: str = "table") -> str:
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
    return format_table(header, rows)


def format_table(header, rows) -> str:
    """Plain-text columns, padded to the widest cell."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
