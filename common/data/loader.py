"""Batches from tensors held in memory (on the GPU when training on one): no worker processes, no
per-example Python. Shuffling is a seeded permutation per epoch, identical on every rank, and each
rank takes its own slice of it, so DDP ranks see disjoint data and a resumed run sees the same batches.
"""

import math

import torch


class TensorLoader:
    """Iterate over (x[idx], y[idx]) batches of equal-length tensors.

    batch_size is the global batch; each of `world_size` ranks gets batch_size // world_size of it.
    """

    def __init__(self, *tensors, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 device=None, seed: int = 0, rank: int = 0, world_size: int = 1, pin_memory: bool = True):
        n = tensors[0].shape[0]
        assert all(t.shape[0] == n for t in tensors), "tensors must share their first dimension"
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} ranks")
        device = torch.device(device or "cpu")
        if device.type == "cuda":
            # the whole set goes to the GPU once; pinned host memory makes that copy a fast DMA
            tensors = tuple((t.pin_memory() if pin_memory else t).to(device, non_blocking=pin_memory) for t in tensors)
        self.tensors = tensors
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.local_batch = batch_size // world_size

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(len(range(self.rank, self.n, self.world_size)) / self.local_batch)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's example indices for one epoch, in order.

        drop_last=True (training): every rank gets the same number of full batches, rank r taking the
        r-th slice of each global batch. drop_last=False (evaluation): rank r takes examples r, r+W, ...,
        so every example is seen exactly once across ranks (counts may differ by one batch).
        """
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        if self.drop_last:
            steps = self.n // self.batch_size
            return order[: steps * self.batch_size].view(steps, self.world_size, self.local_batch)[:, self.rank].reshape(-1)
        return order[self.rank::self.world_size]

    def batches(self, epoch: int = 0, start: int = 0):
        """Yield the batches of `epoch`, skipping the first `start` (to resume mid-epoch)."""
        idx = self.indices(epoch).to(self.tensors[0].device)
        for b in range(start, len(self)):
            sel = idx[b * self.local_batch:(b + 1) * self.local_batch]
            yield tuple(t[sel] for t in self.tensors)

    def __iter__(self):
        return self.batches()
