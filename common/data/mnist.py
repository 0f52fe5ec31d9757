"""MNIST and Fashion-MNIST: the original IDX files, verified by MD5, decoded to uint8 tensors."""

import gzip
from pathlib import Path

import torch

from .registry import register
from .root import cached, fetch

SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path) -> torch.Tensor:
    """IDX format: 2 zero bytes, a dtype code (0x08 = uint8), the number of dims, big-endian int32 sizes, data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(shape)


def _load(tv_class, folder_name: str, key: str, root: Path, download: bool) -> dict:
    folder = root / folder_name / "raw"
    md5 = dict(tv_class.resources)  # torchvision's own file list and checksums
    files = [(n, md5[n]) for pair in SPLITS.values() for n in pair]
    paths = fetch(folder, files, tv_class.mirrors, download=download)

    def build():
        out = {}
        for split, (img, lab) in SPLITS.items():
            x = read_idx(folder / img).unsqueeze(1).contiguous()  # (N, 1, 28, 28) uint8
            y = read_idx(folder / lab).long()  # (N,)
            out[split] = (x, y)
        return out

    return cached(key, paths, build)


@register("mnist")
def load_mnist(root: Path, download: bool = True) -> dict:
    from torchvision.datasets import MNIST
    return _load(MNIST, "MNIST", "mnist", root, download)


@register("fashion_mnist")
def load_fashion_mnist(root: Path, download: bool = True) -> dict:
    from torchvision.datasets import FashionMNIST
    return _load(FashionMNIST, "FashionMNIST", "fashion_mnist", root, download)
