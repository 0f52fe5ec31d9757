"""What a run ran on: the facts a reader needs to trust (or discount) its numbers.

A time means little without the machine: the same command takes 4 minutes on one CPU and 14 on another, and the
precision `--precision auto` picks depends on the instruction set. Every run record carries `machine()`, taken
when the run starts, and its card adds the load average at the end (whether anything else was running is not
knowable from inside the process; the load average is the nearest fact).
"""

import os
import platform

import torch

CPU_CLASSES = ("AMX", "AVX512-BF16", "AVX512", "AVX2", "other")  # best first; decides bf16 on a CPU


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_class(flags: set | None = None) -> str:
    """The instruction-set class that decides our CPU precision: AMX and AVX512-BF16 run bf16 natively
    (`--precision auto` picks bf16 there), AVX512 and AVX2 do not (auto runs fp32)."""
    flags = cpu_flags() if flags is None else flags
    if not flags:  # not Linux: ask torch what it can use
        if torch.cpu._is_amx_tile_supported():
            return "AMX"
        if torch.cpu._is_avx512_bf16_supported():
            return "AVX512-BF16"
        return "other"
    if "amx_tile" in flags or "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    if "avx512f" in flags:
        return "AVX512"
    if "avx2" in flags:
        return "AVX2"
    return "other"


# The environment variables that cap the instruction set torch's kernels use (ATen's vectorised ops and oneDNN's
# matmuls and convolutions). With both at AVX2, an AVX512 machine runs the kernels an AVX2 laptop runs: how the
# course's "Run it" times were taken on a machine that is not a laptop. Only AVX2 is emulated here.
ISA_LIMITS = (("ATEN_CPU_CAPABILITY", ("avx2", "default")), ("ONEDNN_MAX_CPU_ISA", ("AVX2", "SSE41")))


def isa_limit() -> str | None:
    """The ISA cap set in the environment ("ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"), or None."""
    set_ = [f"{k}={os.environ[k]}" for k, values in ISA_LIMITS
            if os.environ.get(k, "").upper() in {v.upper() for v in values}]
    return " ".join(set_) or None


def effective_cpu_class(hw: str | None = None) -> str:
    """The class the kernels run as (of the hardware's class `hw`, default this CPU's): AVX2 where the environment
    caps the ISA at AVX2 on a better CPU."""
    hw = cpu_class() if hw is None else hw
    if isa_limit() and CPU_CLASSES.index(hw) < CPU_CLASSES.index("AVX2"):
        return "AVX2"
    return hw


def load_average() -> list | None:
    """The 1-, 5- and 15-minute load averages, rounded (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_class(m: dict) -> str:
    """One name for a table heading and `compare --machine`: the GPU's name where one trained, else the CPU class
    ("AVX2 CPU")."""
    if m.get("gpu"):
        n = m.get("gpu_count") or 1
        return f"{n}x {m['gpu']}" if n > 1 else m["gpu"]
    emulated = " (emulated)" if m.get("cpu_hw_class") else ""
    return f"{m.get('cpu_class', 'unknown')} CPU{emulated}"


def machine(device: torch.device | None = None) -> dict:
    """The machine record: CPU model and class (with the hardware's own class and the cap, where the environment
    caps the ISA), cores, torch's threads, GPU name and count, torch version, and the
    load average now."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    hw = cpu_class()
    record = dict(cpu=cpu_model(), cpu_class=effective_cpu_class(hw), cores=cores, threads=torch.get_num_threads(),
                  gpu=None, gpu_count=0, torch=torch.__version__, cuda=torch.version.cuda,
                  load_start=load_average())
    if record["cpu_class"] != hw:  # an ISA cap: say what the hardware is and how it was capped
        record.update(cpu_hw_class=hw, isa_limit=isa_limit())
    if device is not None and device.type == "cuda":
        record.update(gpu=torch.cuda.get_device_name(device), gpu_count=torch.cuda.device_count())
    record["class"] = machine_class(record)
    return record
