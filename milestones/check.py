"""`python -m milestones check`: does the whole course work on this machine? One command, one report.

Run it on a new GPU (or after a new PyTorch): it answers in minutes what a week of training would find out.

    environment   the device, torch / CUDA / cuDNN versions, whether bf16 is native, the matmul peak
    tests         the tests marked `device` (pytest -m device), run here (--tests off skips them)
    one line per milestone model: its train script, unchanged, at its `default` preset (on a CPU its `smoke`
                  preset, so the whole check takes minutes), cut to --steps steps, watched as it trains
                  (common.session.STEP_WATCHERS):
                    loss      first and last logged training loss; it must fall (not for the DCGAN: a game's
                              losses need not)
                    speed     examples (or tokens) per second after warm-up, as the run's card reports it
                    MFU       FLOPs of one training step (counted with FlopCounterMode on the second step, which
                              runs eagerly) x steps per second / the device's bf16 peak (half of it for fp32);
                              nn.LSTM's fused kernels are invisible to the counter, so 05's is a lower bound
                    memory    the CUDA allocator's peak during the stage
                    syncs     host syncs per step on CUDA (torch.cuda.set_sync_debug_mode), the median over
                              the steps after warm-up: a step that logs or evaluates syncs, a plain step must not
                    compiles  graphs compiled after warm-up (with --compile): a recompiling model fails the line
Each line is pass, fail or skip (a dataset not under the data root and not downloadable is a skip that names the
files). report.md and report.json go into a run directory; the exit status is 1 when a line fails.
"""

import contextlib
import functools
import importlib
import json
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from common import session
from common.data.root import data_root
from common.device import native_bf16, pick_device
from common.errors import MissingData, UserError
from common.machine import machine

from .bench import peak_flops, resolve
from .compare import format_table
from .estimate import SecondStep


@dataclass(frozen=True)
class Stage:
    milestone: str
    name: str
    args: tuple  # the flags that pick this model, and a small evaluation at the end (the check is of training)
    data: str  # what it reads from the data root (a missing dataset skips the line)
    must_fall: bool = True


STAGES = (
    Stage("01_dnn", "MLP 784-800-10", ("--experiment", "mnist"), "MNIST"),
    Stage("02_cnn_lenet", "LeNet-5", ("--experiment", "lenet5"), "MNIST"),
    Stage("03_alexnet", "AlexNet (CIFAR-10)", ("--experiment", "cifar"), "CIFAR-10"),
    Stage("04_resnet", "ResNet-20", ("--experiment", "cifar", "--test-size", "1000"), "CIFAR-10"),
    Stage("05_lstm", "LSTM LM (PTB)", ("--experiment", "ptb"), "PTB"),
    Stage("06_transformer", "Transformer de-en", ("--experiment", "translate", "--test-size", "50"), "Multi30k"),
    Stage("06_transformer", "GPT char LM", ("--experiment", "charlm"), "Tiny Shakespeare"),
    Stage("07_vae_gan_diffusion", "VAE", ("--model", "vae", "--iw-samples", "0", "--fid-samples", "0"), "MNIST"),
    Stage("07_vae_gan_diffusion", "DCGAN", ("--model", "dcgan", "--fid-samples", "0"), "CIFAR-10 (smoke: MNIST)",
          must_fall=False),
    Stage("07_vae_gan_diffusion", "DDPM U-Net", ("--model", "ddpm", "--fid-samples", "0", "--test-size", "256"),
          "CIFAR-10 (smoke: MNIST)"),
)


class Watch:
    """Told of every step of one stage's run: counts host syncs and compiled graphs per step, and the FLOPs of
    the second step."""

    def __init__(self, warmup: int, syncs: list):
        self.warmup, self.syncs = warmup, syncs  # syncs: the warnings recorded so far (CUDA's sync debug mode)
        self.flops, self.per_step, self.second = None, None, SecondStep()
        self.sync_counts, self.graphs = [], []  # one entry per step

    def __call__(self, sess, n: int) -> None:
        if self.second.at(sess, n):
            self.flops, self.per_step = self.second.flops, self.second.per_step
        self.sync_counts.append(sum("synchroniz" in str(w.message) for w in self.syncs))
        self.graphs.append(_graphs())

    def close(self) -> None:
        self.second.close()

    def syncs_per_step(self) -> float | None:
        """The median of host syncs per step after warm-up (steps that log or evaluate sync; most must not)."""
        c = self.sync_counts
        per = [b - a for a, b in zip(c[self.warmup:], c[self.warmup + 1:])]
        return statistics.median(per) if per else None

    def graphs_after_warmup(self) -> int | None:
        return self.graphs[-1] - self.graphs[self.warmup] if len(self.graphs) > self.warmup else None


def _graphs() -> int:
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


@dataclass
class Line:
    stage: str
    status: str = "fail"  # pass, fail or skip
    note: str = ""
    values: dict = field(default_factory=dict)


def environment(dev: torch.device) -> Line:
    m = machine(dev)
    v = dict(device=m["gpu"] or f"{m['cpu']} ({m['cpu_class']})", torch=torch.__version__, cuda=torch.version.cuda,
             cudnn=torch.backends.cudnn.version() if dev.type == "cuda" else None, bf16_native=native_bf16(dev),
             cores=m["cores"], threads=torch.get_num_threads())
    for p in ("bf16", "fp32"):
        flops, v["peak_source"] = _peak(dev, p)
        v[f"peak_{p}_tflops"] = round(flops / 1e12, 3)
    return Line("environment", "pass", f"{v['device']}, torch {v['torch']}" + (f", CUDA {v['cuda']}" if
                                                                              dev.type == "cuda" else ""), v)


def device_tests(out: Path) -> Line:
    """pytest -m device, here (the tests that hold on any device and matter on this one)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "tests").is_dir():
        return Line("tests", "skip", "no tests/ folder beside the package (an installed copy)")
    log = out / "tests.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "device", "tests"], cwd=root,
                             stdout=f, stderr=subprocess.STDOUT)
    last = (log.read_text().strip().splitlines() or [""])[-1]
    return Line("tests", "pass" if rc == 0 else "fail", f"{last} ({log.name})",
                dict(seconds=round(time.perf_counter() - t0, 1)))


def train_stage(stage: Stage, dev: torch.device, steps: int, preset: str, compile_mode: str, threads: int,
                data_dir, out: Path) -> Line:
    log_every = max(3, steps // 10)
    warmup = min(10, steps // 3)
    argv = [*stage.args, "--preset", preset, "--steps", str(steps), "--log-every", str(log_every),
            "--eval-every", str(steps), "--ckpt-every", str(steps), "--device", str(dev), "--out-dir",
            str(out / "runs"), "--compile", compile_mode, "--threads", str(threads)]
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    line = Line(f"{stage.milestone[:2]} {stage.name}", values=dict(command="train " + stage.milestone + " " +
                                                                       " ".join(argv)))
    runs = out / "runs" / stage.milestone
    before = set(runs.iterdir()) if runs.is_dir() else set()
    train = train_module(stage.milestone)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as syncs, _sync_debug(dev):
        warnings.simplefilter("always")
        watch = Watch(warmup, syncs)
        session.STEP_WATCHERS.append(watch)
        logfile = out / f"{stage.milestone}-{stage.name.split()[0].lower()}.log"
        try:
            with open(logfile, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                train.main(argv)
        except SystemExit as e:  # a train script's UserError: one line, kept in the log
            if e.code in (130, 143):  # Ctrl-C or SIGTERM: the user stops the check, not just this stage
                raise
            cause = e.__context__
            if isinstance(cause, MissingData):
                line.status, line.note = "skip", f"needs {stage.data}: " + " ".join(str(cause).split())[:150]
            else:
                line.note = " ".join(str(cause or e).split())[:200] + f" ({logfile.name})"
            return line
        except Exception as e:
            line.note = f"{type(e).__name__}: {' '.join(str(e).split())[:200]} ({logfile.name})"
            return line
        finally:
            watch.close()
            session.STEP_WATCHERS.remove(watch)
    seconds = time.perf_counter() - t0
    new = sorted(set(runs.iterdir()) - before)
    cuda = dev.type == "cuda"
    return judge(line, stage, watch, new[-1] if new else None, seconds, cuda=cuda, peak=lambda p: _peak(dev, p)[0],
                 memory=torch.cuda.max_memory_allocated(dev) if cuda else None)


def train_module(milestone: str):
    return importlib.import_module(f"milestones.{milestone}.train")


@functools.lru_cache(maxsize=None)
def _peak(dev: torch.device, precision: str) -> tuple[float, str]:
    """(the device's peak FLOP/s in a precision, where it comes from), probed once a process (a CPU probe takes
    half a second)."""
    return peak_flops(dev, precision)


@contextlib.contextmanager
def _sync_debug(dev: torch.device):
    if dev.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("warn")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def judge(line: Line, stage: Stage, watch: Watch, run: Path | None, seconds: float, cuda: bool, peak,
          memory: int | None) -> Line:
    """The stage's measurements from its run directory and its watcher, and pass or fail. peak(precision): the
    device's FLOP/s; memory: the CUDA allocator's peak in bytes (None on a CPU)."""
    if run is None or not (run / "summary.json").is_file():
        line.note = "the run wrote no summary.json"
        return line
    card = json.loads((run / "summary.json").read_text())
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if r.strip()]
    losses = [r[k] for r in rows if r.get("split") == "train" for k in ("loss", "d_loss") if k in r][:1] + \
             [r[k] for r in rows[::-1] if r.get("split") == "train" for k in ("loss", "d_loss") if k in r][:1]
    unit = "tokens" if "tokens_per_second" in card else "examples"
    rate = card.get(f"{unit}_per_second") or card.get("examples_per_second")
    mfu = None
    if watch.flops and watch.per_step and rate:
        mfu = watch.flops * rate / watch.per_step / peak(card.get("precision", "fp32"))
    line.stage = f"{stage.milestone[:2]} {card.get('model', stage.name)}"  # what trained (smoke: a smaller net)
    v = line.values
    v.update(run=str(run), preset=card.get("preset"), precision=card.get("precision"), steps=card.get("steps"),
             per_step=watch.per_step, unit=unit, loss_first=losses[0] if losses else None,
             loss_last=losses[-1] if losses else None, per_second=rate,
             flops_per_step=watch.flops, mfu=mfu, syncs_per_step=watch.syncs_per_step() if cuda else None,
             graphs_after_warmup=watch.graphs_after_warmup(), seconds=round(seconds, 1),
             peak_memory_mib=None if memory is None else round(memory / 2 ** 20))
    problems = []
    if len(losses) < 2:
        problems.append("no training loss logged")
    elif stage.must_fall and not losses[-1] < losses[0]:
        problems.append(f"loss did not fall ({losses[0]:.4g} -> {losses[-1]:.4g})")
    if v["syncs_per_step"]:
        problems.append(f"{v['syncs_per_step']:g} host syncs per step")
    if v["graphs_after_warmup"]:
        problems.append(f"{v['graphs_after_warmup']} graphs compiled after warm-up")
    line.status = "fail" if problems else "pass"
    line.note = "; ".join(problems)
    return line


# ---- a data pack small enough to travel to a GPU machine ----------------------------------------------------

PACKED = ("MNIST", "ptb", "multi30k", "tinyshakespeare")  # copied whole (about 20 MB)
CIFAR_PER_FILE = 1000  # CIFAR-10 (178 MB) is cut to its first images of each of its six files (about 18 MB)


def pack(out, data_dir=None) -> Path:
    """A data root with what every stage reads, under 64 MiB: the four small datasets as they are, and CIFAR-10's
    six files each cut to its first CIFAR_PER_FILE images in the same format (its loader reads them unchanged).
    The check then runs on it with --data-dir; a CIFAR stage trains on 5,000 images instead of 50,000."""
    import pickle
    import shutil

    from common.data.cifar import FOLDER, TEST_FILES, TRAIN_FILES

    src, out = data_root(data_dir), Path(out)
    missing = [n for n in (*PACKED, FOLDER) if not (src / n).is_dir()]
    if missing:
        raise MissingData(f"--pack copies from the data root {src}, which lacks {', '.join(missing)}")
    for name in PACKED:
        shutil.copytree(src / name, out / name, dirs_exist_ok=True)
    (out / FOLDER).mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_FILES, *TEST_FILES):
        with open(src / FOLDER / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        batch["data"], batch["labels"] = batch["data"][:CIFAR_PER_FILE], batch["labels"][:CIFAR_PER_FILE]
        with open(out / FOLDER / name, "wb") as f:
            pickle.dump({k: v for k, v in batch.items() if k in ("data", "labels", "batch_label")}, f)
    return out


# ---- the whole check and its report ----------------------------------------------------------------------

def run_check(device: str = "auto", steps: int = 0, compile_mode: str = "", tests: bool = True, only=(),
              threads: int = 0, data_dir=None, out: Path | None = None, progress=print) -> tuple[list, dict, Path]:
    """Every stage, in course order: (the lines, what was run, the run directory with report.md and
    report.json)."""
    dev = pick_device(device)
    gpu = dev.type == "cuda"
    if threads:  # before the peak probe too: a probe on more threads than the runs get misstates their share
        torch.set_num_threads(threads)
    steps = steps or (300 if gpu else 24)
    if steps < 8:
        raise UserError(f"--steps must be at least 8 (warm-up, a counted step, a loss that can fall), got {steps}")
    compile_mode = compile_mode or ("default" if gpu else "off")
    if data_dir is None:
        data_root()  # a bad $MILESTONES_DATA is one line here, not ten failed stages
    out = Path(out or Path("runs") / "check" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    wanted = resolve(only)  # ids as train takes them (01, dnn, lenet, ...); none: every milestone
    chosen = [s for s in STAGES if s.milestone in wanted]
    lines = [environment(dev)]
    progress(f"check: {lines[0].note}")
    if tests:
        progress("check: tests marked `device` ...")
        lines.append(device_tests(out))
        progress(f"check: tests: {lines[-1].status} {lines[-1].note}")
    for stage in chosen:
        line = train_stage(stage, dev, steps, "default" if gpu else "smoke", compile_mode, threads, data_dir, out)
        lines.append(line)
        progress(f"check: {line.stage}: {line.status} {summary_cells(line)[-1]}".rstrip())
    meta = dict(device=str(dev), steps=steps, preset="default" if gpu else "smoke", compile=compile_mode)
    (out / "report.json").write_text(json.dumps(dict(**meta, lines=[asdict(x) for x in lines]), indent=2) + "\n")
    (out / "report.md").write_text(report(lines, meta, "markdown") + "\n")
    return lines, meta, out


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def summary_cells(line: Line) -> list[str]:
    v = line.values
    loss = (f"{v['loss_first']:.3g} -> {v['loss_last']:.3g}" if v.get("loss_last") is not None else "-")
    speed = f"{v['per_second']:,.0f} {v['unit'][:3]}/s" if v.get("per_second") else "-"
    note = line.note or (f"{v['seconds']:g} s" if "seconds" in v else "")
    return [line.stage, line.status, str(v.get("precision") or "-"), loss, speed,
            "-" if v.get("mfu") is None else f"{100 * v['mfu']:.2f}%", _num(v.get("peak_memory_mib"), ",d"),
            _num(v.get("syncs_per_step"), "g"), _num(v.get("graphs_after_warmup"), "d"), note]


HEADER = ["stage", "status", "prec", "loss first -> last", "speed", "MFU", "MiB", "syncs", "graphs", "note"]


def report(lines: list, meta: dict, fmt: str = "table") -> str:
    env = lines[0].values
    head = [f"check on {env['device']}",
            f"torch {env['torch']}, CUDA {env['cuda'] or '-'}, cuDNN {env['cudnn'] or '-'}, bf16 "
            f"{'native' if env['bf16_native'] else 'not native'}",
            f"peak {env['peak_bf16_tflops']:g} TFLOP/s bf16, {env['peak_fp32_tflops']:g} fp32 ({env['peak_source']})",
            f"{meta['steps']} steps a model, {meta['preset']} presets, --compile {meta['compile']}. MFU: FLOPs of one "
            f"step x steps/s / peak;",
            "MiB: CUDA peak; syncs: host syncs a step (CUDA), median after warm-up; graphs: compiled after warm-up"]
    rows = [summary_cells(x) for x in lines[1:]]
    if fmt == "markdown":
        table = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        table += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(head + [""] + table)
    return "\n".join(head + [format_table(HEADER, rows)])


def main(args) -> None:
    """The `check` subcommand: args from milestones/__main__.py."""
    if args.threads < 0:
        raise UserError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    if args.pack:
        out = pack(args.pack, args.data_dir)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2 ** 20
        print(f"{out}: {size:.0f} MiB; on the GPU machine: python -m milestones check --data-dir {out}")
        return
    lines, meta, out = run_check(args.device, args.steps, args.compile, args.tests == "on", args.ids, args.threads,
                                 args.data_dir, args.out, progress=lambda s: print(s, file=sys.stderr))
    print(report(lines, meta))
    failed = [x.stage for x in lines if x.status == "fail"]
    print(f"{out / 'report.md'}: " + (f"{len(failed)} failed: {', '.join(failed)}" if failed else "every line "
                                      "passed or was skipped"))
    if failed:
        raise SystemExit(1)
