"""Checkpoints: written atomically, read back safely (weights_only=True), holding the full training state.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so `torch.load(weights_only=True)`
can read it without unpickling arbitrary objects:
    model, optimizer, scheduler, scaler  state dicts
    step, epoch                          where training stopped
    rng                                  torch CPU (and CUDA) generator states, Python's random state
    config                               the resolved config, for `sample` and for resuming
"""

import os
import random
import tempfile
from pathlib import Path

import torch

from .device import unwrap
from .errors import UserError

FILENAME = "checkpoint.pt"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(_flatten_py_state(random.getstate()))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _flatten_py_state(s):
    version, internal, gauss = s
    return version, list(internal), gauss


def save_checkpoint(path, model, optimizer=None, scheduler=None, scaler=None, **extra) -> Path:
    """Write the training state to `path` atomically: a crash mid-write never leaves a truncated file."""
    path = Path(path)
    state = {"model": unwrap(model).state_dict(), "rng": rng_state(), **extra}
    for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            state[key] = obj.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def find_checkpoint(path) -> Path:
    """Accept a checkpoint file or a run directory holding checkpoint.pt."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        raise UserError(f"no checkpoint at {path} (expected a {FILENAME} file or a run directory holding one)")
    return p


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint safely; a corrupt or foreign file is a clear error, not a traceback."""
    p = find_checkpoint(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with code in it, not a torch file at all
        raise UserError(f"{p} is not a readable milestones checkpoint ({type(e).__name__}: {e})"[:500]) from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{p} is not a milestones checkpoint (no model state in it)")
    return state


def restore(state: dict, model, optimizer=None, scheduler=None, scaler=None) -> None:
    """Put a loaded checkpoint back into live objects, RNG states included."""
    try:
        unwrap(model).load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint does not fit this model (different architecture flags?): {e}"[:800]) from None
    for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None and key in state:
            obj.load_state_dict(state[key])
    if "rng" in state:
        set_rng_state(state["rng"])
