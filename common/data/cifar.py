"""CIFAR-10 (Krizhevsky 2009): the python-pickle batches, decoded to uint8 (N, 3, 32, 32) tensors.

Users without the files get the official tarball, checked against its MD5 and extracted by torchvision's
download code. A data root that already holds `cifar-10-batches-py/` is read directly, without per-file
MD5s: the mirror in ../shared/data is JPEG-derived and differs from the official bytes (its README).
"""

import pickle
from pathlib import Path

import torch

from ..errors import MissingData
from .registry import register
from .root import cached, offline

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the official training set
STD = (0.2470, 0.2435, 0.2616)


def _read_batches(folder: Path, names) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")  # the files are Python 2 pickles of numpy arrays
        xs.append(torch.from_numpy(d["data"]).view(-1, 3, 32, 32))  # row-major CHW
        ys.append(torch.tensor(d["labels"], dtype=torch.long))
    return torch.cat(xs).contiguous(), torch.cat(ys)


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive
    try:
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except Exception as e:
        raise MissingData(f"CIFAR-10 is not in {root / FOLDER} and could not be downloaded "
                        f"({type(e).__name__}: {e}); put the extracted `{FOLDER}/` folder (data_batch_1..5, "
                        f"test_batch) there, or point --data-dir / $MILESTONES_DATA at a root that has it") from None


@register("cifar10")
def load_cifar10(root: Path, download: bool = True) -> dict:
    folder = root / FOLDER
    paths = [folder / n for n in TRAIN_FILES + TEST_FILES]
    if not all(p.is_file() for p in paths):
        if not download or offline():
            missing = "\n".join(f"  {p}" for p in paths if not p.is_file())
            raise MissingData(f"CIFAR-10 files are missing:\n{missing}")
        _download(root)
    return cached("cifar10", paths, lambda: {"train": _read_batches(folder, TRAIN_FILES),
                                              "test": _read_batches(folder, TEST_FILES)})
