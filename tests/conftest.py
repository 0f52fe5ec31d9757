"""Shared test fixtures: the real data root, an isolated cache and runs directory, and CLI runners."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real datasets: $MILESTONES_DATA (CI points it at ../shared/data), else ../shared/data."""
    root = Path(os.environ.get("MILESTONES_DATA") or SHARED_DATA)
    if not root.is_dir():
        pytest.skip(f"no data root at {root}; set MILESTONES_DATA")
    return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-tensor cache shared by all tests of a session, never the user's own."""
    if "MILESTONES_CACHE" not in os.environ:
        os.environ["MILESTONES_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def one_thread():
    """Modules of many small ops (decoders stepped token by token, tiny U-Nets, plots' short runs) use this:
    on a shared CPU, OpenMP threads waiting for a busy core cost more than they give."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def keep_sessions(monkeypatch, module) -> list:
    """Every Session `module` opens from now on, in order (the module's own name for the class is patched)."""
    sessions = []

    class Kept(module.Session):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            sessions.append(self)

    monkeypatch.setattr(module, "Session", Kept)
    return sessions


def run_cli(*args, env=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    """`python -m milestones <args>` in a subprocess (for exit codes and messages exactly as a user sees them)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "milestones", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or REPO)


def only_run_dir(out_dir: Path, milestone: str) -> Path:
    """The single run directory a test's training run wrote."""
    runs = sorted((Path(out_dir) / milestone).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


class Built(Exception):
    """Raised where a training run has built what it trains with (model, optimiser, schedule), before its first
    step."""


def built(monkeypatch, module, main, argv) -> dict:
    """What `main(argv)` (a train script's) builds for its (first) training loop, seen through `module`'s Session:
    the Session's config, step total and steps per epoch, and the model, optimiser and scheduler it attaches.
    Nothing is trained."""
    got = {}

    class Stop(module.Session):
        def attach(self, model, optimizer=None, scheduler=None, *args, **kwargs):
            got.update(cfg=self.cfg, total=self.total, per_epoch=self.steps_per_epoch, model=model, opt=optimizer,
                       sched=scheduler)
            raise Built

    monkeypatch.setattr(module, "Session", Stop)
    with pytest.raises(Built):
        main(argv)
    return got
