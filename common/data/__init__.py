"""Dataset registry.

    load("mnist", data_dir) -> {"train": (images uint8 (N, 1, 28, 28), labels int64 (N,)), "test": ...}

Each dataset lives in its own module and registers a loader with `@register(name)`. The data root
(`--data-dir`, else $MILESTONES_DATA, else a per-user cache) may be read-only: decoded tensors are
cached under $MILESTONES_CACHE (default ~/.cache/milestones) instead.
"""

from .root import cache_dir, cached, data_root, fetch  # noqa: F401
from .loader import TensorLoader  # noqa: F401
from .registry import DATASETS, load, register  # noqa: F401
from . import cifar, mnist, text  # noqa: F401,E402  (registers cifar10, mnist, fashion_mnist, ptb, tinyshakespeare)
