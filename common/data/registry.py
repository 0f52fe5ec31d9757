"""Name -> loader function. Modules register themselves on import (see common/data/__init__.py)."""

from ..errors import UserError
from .root import data_root

DATASETS = {}


def register(name: str):
    def deco(fn):
        DATASETS[name] = fn
        return fn
    return deco


def load(name: str, data_dir=None, download: bool = True) -> dict:
    """Decoded splits of a registered dataset, as CPU tensors."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](data_root(data_dir), download=download)
