"""Where data lives, how missing files are fetched and verified, and the decoded-tensor cache."""

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from ..errors import MissingData, UserError


def data_root(data_dir=None) -> Path:
    """--data-dir, else $MILESTONES_DATA, else ~/.cache/milestones/data."""
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise UserError(f"data root {root} does not exist (given with --data-dir)")
        return root
    env = os.environ.get("MILESTONES_DATA")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise UserError(f"data root {root} does not exist (given by $MILESTONES_DATA)")
        return root
    return Path.home() / ".cache" / "milestones" / "data"


def offline() -> bool:
    """$MILESTONES_OFFLINE=1: never try the network (missing files are reported at once)."""
    return os.environ.get("MILESTONES_OFFLINE", "") not in ("", "0")


def cache_dir() -> Path:
    """Writable place for decoded tensors: $MILESTONES_CACHE, else ~/.cache/milestones/cache."""
    d = Path(os.environ.get("MILESTONES_CACHE") or Path.home() / ".cache" / "milestones" / "cache").expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def fetch(folder: Path, files, mirrors, download: bool = True) -> list[Path]:
    """Make sure each (filename, md5) is in `folder` with the right checksum, downloading what is missing.

    Downloads use torchvision's download code (which verifies the MD5), imported only when a file is missing:
    importing torchvision costs over a second, a sizeable share of a quick run. With no network, or a read-only
    root, the error lists exactly which files to put where.
    """
    folder = Path(folder)
    download = download and not offline()
    paths, missing = [], []
    for name, md5 in files:
        path = folder / name
        if path.is_file():
            if md5 and not check_integrity(path, md5):
                raise UserError(f"{path} exists but its MD5 is not {md5}: the file is corrupt or a different "
                                f"version; delete it to download it again")
        else:
            missing.append((name, md5))
        paths.append(path)
    if missing and download:
        from torchvision.datasets.utils import download_url

        errors = []
        for name, md5 in missing:
            for mirror in mirrors:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    download_url(mirror + name, root=str(folder), filename=name, md5=md5)
                    break
                except Exception as e:  # network down, HTTP error, read-only root, bad checksum
                    errors.append(f"{mirror + name}: {type(e).__name__}: {e}")
        missing = [(n, m) for n, m in missing if not check_integrity(folder / n, m)]
        if missing:
            last = errors[-1] if errors else ""
            raise MissingData(_missing_message(folder, missing) + f"\ndownload failed ({last})")
    elif missing:
        raise MissingData(_missing_message(folder, missing))
    return paths


def check_integrity(path: Path, md5: str | None) -> bool:
    """The file exists and (when an MD5 is given) has that MD5."""
    path = Path(path)
    if not path.is_file():
        return False
    if not md5:
        return True
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest() == md5


def _missing_message(folder: Path, missing) -> str:
    names = "\n".join(f"  {folder / n}" + (f"  (md5 {m})" if m else "") for n, m in missing)
    return (f"dataset files are missing:\n{names}\nput them there, or point --data-dir / $MILESTONES_DATA at a "
            f"data root that has them")


def cached(key: str, sources: list[Path], build):
    """Return build()'s dict of tensors, cached on disk and rebuilt when any source file changes."""
    h = hashlib.sha1()
    for p in sources:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    path = cache_dir() / f"{key}-{h.hexdigest()[:12]}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never fatal
    value = build()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        torch.save(value, f)
    os.replace(tmp, path)
    return value
