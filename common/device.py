"""Where and how a run computes: device, precision, seeding, torch.compile, torchrun/DDP.

One `Runtime` object carries the answers, so a train loop reads
`rt.device`, `rt.autocast()`, `rt.is_main` and never asks twice.
"""

import contextlib
import ctypes
import os
import random
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError
from .machine import isa_limit

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# torch's own thread count, read before any run sets another: --threads 0 restores it, so a run started in the
# same process after one with --threads 1 (tests, notebooks) does not silently inherit that run's setting
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def pick_device(name: str = "auto") -> torch.device:
    """cuda > mps > cpu for 'auto'; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this machine has no CUDA GPU (try --device cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for, but MPS is not available here")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 has hardware behind it here: a CUDA GPU that supports it (Ampere and later), or a CPU with
    AVX512-BF16 or AMX. An AVX2-only CPU emulates bf16 (on an AMD EPYC with AVX2, autocast made a small U-Net's
    training step 10x slower than fp32: NOTES of 07), and MPS autocast is not used here."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if isa_limit():  # kernels capped at AVX2 (see common.machine): bf16 would be emulated
            return False
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` (the quick presets' choice): bf16 autocast where the hardware runs it natively, else fp32, so a
    preset is fast on every machine. Any other value is kept as asked."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise UserError(
            f"--precision fp16 needs a CUDA GPU (it relies on GradScaler); on {device.type} use bf16 or fp32"
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


@dataclass
class Runtime:
    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def autocast_dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """Mixed-precision context for the forward pass (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler":
        """Loss scaling is needed only for fp16 (bf16 has fp32's exponent range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return self.device.type

    def wrap(self, model: torch.nn.Module, compile="off") -> torch.nn.Module:
        """DDP-wrap (when distributed) and optionally torch.compile a model already on self.device. `compile` is a
        mode (default, reduce-overhead: CUDA graphs, max-autotune) or off; True/False as older records have it."""
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        mode = {True: "default", False: "off", None: "off"}.get(compile, compile)
        if mode != "off":
            model = torch.compile(model, mode=None if mode == "default" else mode)
        return model

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks (identity on one process)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves large blocks (above a threshold that adapts up to 32 MiB) with mmap and unmaps them
    when freed, and trims the heap's free top: every training step then faults its activations in again, page by
    page, zeroed by the kernel. Raising both thresholds to their maximum keeps freed blocks in the heap. 40 steps of
    06's translate quick (variable-shaped token-count batches): 12.2 s of system time in 47.9 CPU seconds before,
    1.7 s in 39.3 after (06's NOTES). The price: the process keeps its peak memory. True if glibc took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 2 ** 31 - 1) and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def deterministic_kernels(on: bool) -> None:
    """--deterministic: kernels that give the same bits for the same inputs. On a GPU cuDNN's autotuner (which
    may pick another algorithm on a resumed run) goes off, and cuBLAS needs a fixed workspace; ops with no
    deterministic kernel warn instead of failing the run."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on


def setup(device: str = "auto", precision: str = "fp32", seed: int = 0, threads: int = 0,
          deterministic: bool = False) -> Runtime:
    """Pick the device, check the precision, seed, and join torchrun's process group if launched by it.

    Use as `with setup(...) as rt:` so the process group is left however the run ends."""
    torch.set_num_threads(threads or TORCH_DEFAULT_THREADS)  # a different count sums GEMMs in another order
    keep_freed_memory()
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = pick_device(device)
    if world_size > 1 and dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    check_precision(precision, dev)
    precision = resolve_precision(precision, dev)
    if precision == "bf16" and dev.type == "cpu" and not native_bf16(dev) and rank == 0:
        print("note: this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 autocast is emulated and usually "
              "slower than fp32; --precision auto picks the faster one", file=sys.stderr)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for fp32 matmuls
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not deterministic  # autotuning picks algorithms run by run
    deterministic_kernels(deterministic)
    seed_everything(seed)  # same seed on every rank: identical initial weights
    return Runtime(device=dev, precision=precision, rank=rank, local_rank=local_rank, world_size=world_size)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under torch.compile and DDP wrappers (for state_dict and parameter counts)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in unwrap(model).parameters() if p.requires_grad)


# Dense bf16/fp16 tensor-core peaks (no sparsity), from the vendors' datasheets, keyed by a substring of
# torch.cuda.get_device_name(). MFU = achieved model FLOP/s over this peak; unknown devices report none.
PEAK_FLOPS = {"H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 125e12, "A10": 125e12,
              "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12}


def mfu(flops_per_example: float, examples_per_second: float, rt: Runtime):
    """Model FLOPs utilisation on a known CUDA GPU (None elsewhere). flops_per_example counts forward and
    backward (about 3x the forward multiply-adds times 2)."""
    if rt.device.type != "cuda" or not examples_per_second:
        return None
    name = rt.device_name
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    if peak is None:
        return None
    if rt.precision == "fp32":
        peak /= 2  # TF32 tensor cores run at half the bf16 rate on these parts
    return flops_per_example * examples_per_second / peak
