"""AlexNet's data pipeline (Section 4.1), on tensors: random crops and mirrors, the PCA colour jitter, the
ten-patch test, and an ImageNet `ImageFolder` path for users who have the images.

ImageNet, as in the paper: rescale each image so its shorter side is 256, take the central 256x256 patch
(done once, on CPU workers, giving uint8 tensors); then on the device: random 227x227 crops and horizontal
mirrors for training, and at test time the four corner patches, the centre patch and their mirrors, whose
softmax outputs are averaged.
"""

import itertools
from pathlib import Path

import torch

from common.data.augment import normalize, random_crop, random_hflip
from common.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the usual per-channel statistics of ImageNet's training set
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------------
# PCA colour jitter: "altering the intensities of the RGB channels"
# ---------------------------------------------------------------------------------------------------------

def fit_pca(images: torch.Tensor, max_pixels: int = 2_000_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (3,) and eigenvectors (3, 3) (columns p_i) of the RGB covariance over training pixels,
    on the [0, 1] scale. `images` is uint8 (N, 3, H, W); a random subset of pixels is enough."""
    px = images.permute(1, 0, 2, 3).reshape(3, -1)  # (3, N*H*W)
    if px.shape[1] > max_pixels:
        g = torch.Generator().manual_seed(seed)
        px = px[:, torch.randint(0, px.shape[1], (max_pixels,), generator=g)]
    px = px.double() / 255
    cov = torch.cov(px)  # (3, 3)
    eigval, eigvec = torch.linalg.eigh(cov)
    return eigval.float().clamp_min(0), eigvec.float()


def pca_jitter(x: torch.Tensor, eigval: torch.Tensor, eigvec: torch.Tensor, std: float = 0.1,
               generator=None) -> torch.Tensor:
    """To every pixel of image b add [p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T with a_i ~ N(0, std), drawn once
    per image per presentation. x: float (B, 3, H, W) on the [0, 1] scale."""
    alpha = torch.randn(x.shape[0], 3, device=x.device, generator=generator) * std  # (B, 3)
    shift = (alpha * eigval.to(x.device)) @ eigvec.to(x.device).T  # (B, 3): sum_i p_i a_i l_i
    return x + shift[:, :, None, None]


# ---------------------------------------------------------------------------------------------------------
# Crops
# ---------------------------------------------------------------------------------------------------------

def ten_crops(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (10, B, C, size, size): four corners, centre, then the same five mirrored."""
    H, W = x.shape[-2:]
    if size > H or size > W:
        raise ValueError(f"crop {size} is larger than the {H}x{W} image")
    top, left = (H - size) // 2, (W - size) // 2
    offsets = [(0, 0), (0, W - size), (H - size, 0), (H - size, W - size), (top, left)]
    five = [x[..., i:i + size, j:j + size] for i, j in offsets]
    return torch.stack(five + [c.flip(-1) for c in five])


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    top, left = (H - size) // 2, (W - size) // 2
    return x[..., top:top + size, left:left + size]


class Augment:
    """uint8 batches -> model input on the device: train=True crops, mirrors and jitters; train=False crops
    the centre (or returns all ten patches with ten_crop=True, shape (10, B, C, s, s))."""

    def __init__(self, device, crop: int, padding: int, mean, std, eigval=None, eigvec=None, jitter: float = 0.0,
                 channels_last: bool = False):
        self.device, self.crop, self.padding = device, crop, padding
        self.mean, self.std = mean, std
        # on the device once: moved in pca_jitter they would be two blocking host-to-device copies every step
        self.eigval, self.eigvec = (None if t is None else t.to(device) for t in (eigval, eigvec))
        self.jitter = jitter
        self.channels_last = channels_last

    def _finish(self, x: torch.Tensor, jitter: bool) -> torch.Tensor:
        x = x.float().div_(255)  # (B, 3, s, s) in [0, 1]
        if jitter and self.jitter > 0:
            x = pca_jitter(x, self.eigval, self.eigvec, self.jitter)
        x = normalize(x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        x = random_hflip(random_crop(x, self.crop, self.padding))
        return self._finish(x, jitter=True)

    def test(self, x: torch.Tensor, ten_crop: bool = False) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.padding:
            x = torch.nn.functional.pad(x, (self.padding,) * 4)
        if ten_crop:
            crops = ten_crops(x, self.crop)  # (10, B, 3, s, s)
            return self._finish(crops.flatten(0, 1), jitter=False).unflatten(0, (10, -1))
        return self._finish(center_crop(x, self.crop), jitter=False)


# ---------------------------------------------------------------------------------------------------------
# ImageNet: an ImageFolder root
# ---------------------------------------------------------------------------------------------------------

def imagenet_folders(root: Path) -> tuple[Path, Path]:
    """<root>/imagenet/{train,val}, each one folder per class (torchvision's ImageFolder layout)."""
    base = Path(root) / "imagenet"
    train, val = base / "train", base / "val"
    for p in (train, val):
        if not p.is_dir():
            raise UserError(f"ImageNet folder {p} is missing: put the ILSVRC-2012 images there in ImageFolder "
                            f"layout (one sub-folder per class under train/ and val/); ImageNet cannot be "
                            f"downloaded automatically (its terms require a login at image-net.org)")
    return train, val


def imagenet_loaders(root: Path, batch_size: int, workers: int, rank: int = 0, world_size: int = 1, seed: int = 0):
    """DataLoaders of uint8 (B, 3, 256, 256) batches: shorter side resized to 256, central 256x256 kept."""
    from torchvision import datasets, transforms

    train_dir, val_dir = imagenet_folders(root)
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(256), transforms.PILToTensor()])
    sets = {}
    for split, folder in (("train", train_dir), ("val", val_dir)):
        try:
            sets[split] = datasets.ImageFolder(str(folder), transform=tf)
        except (FileNotFoundError, RuntimeError) as e:
            raise UserError(f"cannot read ImageFolder {folder}: {e}") from None
    if sets["train"].classes != sets["val"].classes:
        raise UserError(f"{train_dir} and {val_dir} hold different class folders")
    local = batch_size // world_size
    loaders = {}
    for split, ds in sets.items():
        sampler = None
        if world_size > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(ds, world_size, rank, shuffle=split == "train",
                                                                      seed=seed, drop_last=split == "train")
        loaders[split] = torch.utils.data.DataLoader(
            ds, batch_size=local if split == "train" else max(1, local // 2), sampler=sampler,
            shuffle=split == "train" and sampler is None, drop_last=split == "train", num_workers=workers,
            pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed))
    return loaders["train"], loaders["val"], len(sets["train"].classes)


class Epochs:
    """A training DataLoader served the way a TensorLoader is: `batches(epoch, start)` is epoch `epoch`,
    reshuffled from the seed, from batch `start` on (a resumed run loads and skips the batches it has seen)."""

    def __init__(self, loader: torch.utils.data.DataLoader, seed: int = 0):
        self.loader, self.seed = loader, seed

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int, start: int = 0):
        if hasattr(self.loader.sampler, "set_epoch"):  # DistributedSampler shuffles by (seed, epoch)
            self.loader.sampler.set_epoch(epoch)
        self.loader.generator.manual_seed(self.seed * 100_003 + epoch)
        return itertools.islice(self.loader, start, None)
