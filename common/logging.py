"""Run records (docs/DESIGN.md, run-record contract) and progress bars.

    runs/<milestone>/<timestamp>-<model>/
        config.json     resolved config, command line, torch version, device name, git commit
        metrics.jsonl   one JSON object per logged step or evaluation
        summary.json    the result card that `python -m milestones compare` reads
        checkpoint.pt   latest training state (see checkpoint.py)

Only rank 0 writes; on other ranks every method is a no-op. Throughput and the loop schedule live in session.py.
"""

import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .errors import UserError
from .machine import load_average, machine

_IMPORTED = time.time()

SUMMARY_KEYS = (
    "milestone", "model", "dataset", "metric", "value", "paper_value", "paper_source", "params",
    "train_seconds", "examples_per_second", "device", "precision", "world_size", "seed", "preset",
)  # plus "epochs" or "steps"


def process_start() -> float:
    """When this process started, as a time.time() value: read from /proc on Linux, so that interpreter start-up
    and the torch import count, as they do for a user timing the whole command. Elsewhere: when this module was
    first imported (close, since it is imported at start-up)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


def seconds_since_start() -> float:
    """Wall seconds since this process started (process_start)."""
    return round(time.time() - process_start(), 2)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _clean(v):
    """JSON has no NaN/inf: write them as null so every reader can parse the file."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunLogger:
    """Creates (or, on resume, reopens) a run directory and writes its records."""

    def __init__(self, milestone: str, model: str, config: dict, out_dir="runs", rt=None,
                 run_dir=None, argv=None, cfg=None):
        self.is_main = rt is None or rt.is_main
        self.milestone, self.model, self.rt, self.cfg = milestone, model, rt, cfg
        self.machine = machine(rt.device if rt is not None else None)  # taken at the start (load average too)
        self.start = time.time()
        if run_dir is not None:
            self.dir = Path(run_dir)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self.dir = Path(out_dir) / milestone / f"{stamp}-{model}"
        if not self.is_main:
            return
        fresh = run_dir is None
        if fresh:  # two runs started in the same second get distinct folders
            base, n = self.dir, 1
            while self.dir.exists():
                n += 1
                self.dir = base.with_name(f"{base.name}-{n}")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {self.dir}: {e.strerror}") from None
        record = {
            "milestone": milestone,
            "model": model,
            "config": config,
            "argv": list(sys.argv if argv is None else argv),
            "torch": torch.__version__,
            "device": (rt.device_name if rt is not None else "cpu"),
            "world_size": (rt.world_size if rt is not None else 1),
            "git_commit": git_commit(),
            "machine": self.machine,
            "started": datetime.now().isoformat(timespec="seconds"),
        }
        name = "config.json" if fresh else f"config.resume-{datetime.now():%Y%m%d-%H%M%S}.json"
        self._write_json(self.dir / name, record)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def log(self, step: int, split: str, epoch=None, **metrics) -> None:
        """Append one line to metrics.jsonl."""
        if not self.is_main:
            return
        row = {"step": step, "epoch": epoch, "split": split, **{k: _clean(v) for k, v in metrics.items()},
               "time": round(time.time() - self.start, 3)}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")

    def summary(self, **card) -> dict:
        """Write summary.json; insists on the contract's keys so `compare` can trust every card. What the run
        itself knows (milestone, model, device, precision, world size, seed, preset) is filled in."""
        known = dict(milestone=self.milestone, model=self.model)
        if self.rt is not None:
            known.update(device=self.rt.device_name, precision=self.rt.precision, world_size=self.rt.world_size)
        if self.cfg is not None:
            known.update(seed=self.cfg.seed, preset=self.cfg.preset)
        # process start -> this card, in wall seconds and in the CPU seconds this process used (on a machine others
        # share, the CPU seconds of a one-thread run are near what it takes alone)
        card = {**known, "wall_seconds": seconds_since_start(), "cpu_seconds": round(time.process_time(), 1), **card}
        card.setdefault("machine", {**self.machine, "load_end": load_average()})
        missing = [k for k in SUMMARY_KEYS if k not in card]
        if "epochs" not in card and "steps" not in card:
            missing.append("epochs|steps")
        if missing:
            raise ValueError(f"summary is missing contract keys: {missing}")
        card = {k: _clean(v) for k, v in card.items()}
        if self.is_main:
            self._write_json(self.dir / "summary.json", card)
        return card

    @staticmethod
    def _write_json(path: Path, obj) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
        tmp.replace(path)


def progress(iterable=None, total=None, desc="", rt=None, unit="it", **kw):
    """A tqdm bar on rank 0 only (silent elsewhere)."""
    disable = rt is not None and not rt.is_main
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
                file=sys.stderr, **kw)
