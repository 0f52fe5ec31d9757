"""How long each chapter's GPU recipes should take on one H100: an estimate, until a measured card replaces it.

    python -m milestones.estimate            # writes results/estimates/h100.json (a few CPU minutes)

For each command below the real train script starts, here on the CPU, at its real preset; two steps run and
the second is counted: its FLOPs (FlopCounterMode) and its kernels (every aten op that is not a view, as a
dispatch mode sees it). The run is then stopped. With the preset's step total (read from the session) the
estimate is

    step time = max(FLOPs / (40% of the H100's datasheet peak), kernels x 8 microseconds)
    run time  = steps x step time        (evaluation, data loading and compilation not counted)

40% is what a well-fed bf16 training step reaches on an H100 (fp32 runs as TF32 at half the bf16 peak); 8 us a
kernel is eager PyTorch's launch cost on a fast host, the floor for small nets (CUDA graphs, `--compile
reduce-overhead`, lower it). Image recipes are counted at a batch of 16 and scaled to their batch (FLOPs grow
with the batch, kernels do not). nn.LSTM's work (one cuDNN call per layer on a GPU, its own kernels per time
step inside) is invisible to both counters: 05's PTB row counts the rest, and says so with "≥". These are estimates; `python -m milestones check` on a GPU measures.
"""

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from common import session
from common.device import PEAK_FLOPS
from common.errors import UserError, exit_on_user_error
from common.machine import machine

from . import ROOT, resolve_config

MFU, LAUNCH_SECONDS, GPU = 0.40, 8e-6, "H100"
COUNT_BATCH = 16  # image recipes are counted at this batch and scaled
OUT = ROOT.parent / "results" / "estimates" / "h100.json"


@dataclass(frozen=True)
class Case:
    milestone: str
    flags: str  # after `train <milestone>`: what a GPU user runs
    expect: str  # the paper's result for it (each number is also in the chapter's NOTES.md: a test checks)
    scale_batch: bool = False  # count at COUNT_BATCH and scale (image nets)
    fused_rnn: bool = False  # nn.LSTM's work is invisible to the counters: its numbers are lower bounds


CASES = (
    Case("01_dnn", "--experiment mnist", "1.6% test error (Simard et al. 2003, 800 hidden units)"),
    Case("01_dnn", "--experiment mnist --preset paper", "none: the 1986 paper had no digit task"),
    Case("02_cnn_lenet", "", "0.80% test error (LeCun et al. 1998, distortions)"),
    Case("02_cnn_lenet", "--preset paper", "0.95% test error (LeCun et al. 1998, Fig. 9)"),
    Case("03_alexnet", "", "none on CIFAR-10 (ImageNet: 40.7% top-1)", scale_batch=True),
    Case("04_resnet", "", "8.75% test error (He et al. 2015, Table 6)", scale_batch=True),
    Case("04_resnet", "--model resnet110 --preset paper", "6.43% test error (Table 6)", scale_batch=True),
    Case("05_lstm", "--experiment ptb", "82.7 test perplexity (Zaremba et al. 2014, medium)", fused_rnn=True),
    Case("05_lstm", "--experiment adding --preset paper", "1 of 2,560 wrong at T=100 (1997, Table 7)",
         fused_rnn=True),  # the 1997 cell runs through nn.LSTM's kernel
    Case("06_transformer", "", "none on Multi30k (WMT14 en-de: 27.3 BLEU)"),
    Case("06_transformer", "--experiment charlm", "val loss 1.4697 (nanoGPT's Shakespeare-char)"),
    Case("07_vae_gan_diffusion", "--model vae", "86.76 nats test NLL (Burda et al. 2015, Table 1)"),
    Case("07_vae_gan_diffusion", "--model dcgan", "none: the paper shows samples", scale_batch=True),
    Case("07_vae_gan_diffusion", "--model ddpm", "FID 3.17 at the paper's size (Ho et al. 2020)",
         scale_batch=True),
    Case("07_vae_gan_diffusion", "--model ddpm --preset paper", "FID 3.17 (Ho et al. 2020, Table 1)",
         scale_batch=True),
)
COUNT_ONLY = {"07_vae_gan_diffusion": ["--fid-samples", "0"]}  # the scoring classifier is not part of a step


class Kernels(TorchDispatchMode):
    """Counts the aten ops that launch work (views and metadata ops launch nothing)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.n += 1
        return func(*args, **(kwargs or {}))


class Counted(Exception):
    """Raised by the watcher once the counted step is done: the run has told us what it needs to."""


class SecondStep:
    """The FLOPs and kernels of a run's second step (its first is set-up), as a step watcher sees it: the counters
    open when step 1 is counted and close when step 2 is. Under torch.compile the counted step runs eagerly
    (dynamo leaves frames alone while a dispatch mode is on). `check` and `estimate` both count this way."""

    def __init__(self):
        self.flops = self.kernels = self.per_step = None
        self._modes = ()

    def at(self, sess, n: int) -> bool:
        """Called at each step; True at the one whose count just closed."""
        if sess.step_count == 1:
            self._modes = (FlopCounterMode(display=False), Kernels())
            for m in self._modes:
                m.__enter__()
        elif sess.step_count == 2 and self._modes:
            flops, kernels = self._modes
            self.close()
            self.flops, self.kernels, self.per_step = flops.get_total_flops(), kernels.n, n
            return True
        return False

    def close(self) -> None:
        """Leave the counters: at the end of the counted step, or early when the run ended inside it."""
        for m in reversed(self._modes):
            m.__exit__(None, None, None)
        self._modes = ()


class Counter(SecondStep):
    """estimate's watcher: the preset's step total, batch and precision, then the second step; the run stops."""

    def __call__(self, sess, n: int) -> None:
        if sess.step_count == 1:
            self.total, self.batch, self.precision = sess.total, sess.cfg.batch_size, sess.rt.precision
        if self.at(sess, n):
            raise Counted


def count(case: Case, data_dir=None) -> dict:
    """One case's step total, FLOPs and kernels a step (at its real batch), from two steps of its train script."""
    import importlib
    import tempfile

    train = importlib.import_module(f"milestones.{case.milestone}.train")
    counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        argv = case.flags.split() + ["--device", "cpu", "--out-dir", tmp, "--threads", "1"]
        argv += ["--batch-size", str(COUNT_BATCH)] if case.scale_batch else []
        argv += ["--data-dir", str(data_dir)] if data_dir else []
        argv += COUNT_ONLY.get(case.milestone, [])
        session.STEP_WATCHERS.append(counter)
        try:
            train.main(argv)
        except Counted:
            pass
        finally:
            session.STEP_WATCHERS.remove(counter)
            counter.close()
    if counter.flops is None:
        raise UserError(f"train {case.milestone} {case.flags}: the run ended before its second step")
    scale, total = 1.0, counter.total
    if case.scale_batch:
        real = _preset_batch(case)
        scale = real / COUNT_BATCH
        if not _fixed_steps(case):  # epochs: fewer, larger steps at the real batch
            total = math.ceil(total / scale)
    return dict(milestone=case.milestone, command=command(case), steps=total,
                batch=_preset_batch(case) if case.scale_batch else counter.batch, precision=counter.precision,
                flops_per_step=counter.flops * scale, kernels_per_step=counter.kernels)


def command(case: Case) -> str:
    return f"train {case.milestone} {case.flags}".strip()


def _config(case: Case):
    """The resolved config of a case (its preset applied), without running it."""
    return resolve_config(case.milestone, case.flags.split())


def _preset_batch(case: Case) -> int:
    return _config(case).batch_size


def _fixed_steps(case: Case) -> bool:
    return _config(case).steps > 0


def estimate(row: dict, peak_bf16: float) -> dict:
    """The H100 time of a counted case: compute-bound or launch-bound, whichever is longer."""
    peak = peak_bf16 / 2 if row["precision"] == "fp32" else peak_bf16
    compute, launch = row["flops_per_step"] / (MFU * peak), row["kernels_per_step"] * LAUNCH_SECONDS
    step = max(compute, launch)
    return dict(row, step_seconds=step, bound="launches" if launch > compute else "compute",
                hours=row["steps"] * step / 3600)


def duration(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.0f} days"


def published(path: Path = OUT) -> list[dict] | None:
    """The estimates' record, each row with the paper's result for its command (`expect`) and whether its numbers
    are lower bounds (`at_least`: nn.LSTM's own work is not counted); None when there is no record. The record holds
    what was counted; the papers' words are in CASES."""
    if not Path(path).is_file():
        return None
    cases = {command(c): c for c in CASES}
    rows = json.loads(Path(path).read_text())["rows"]
    return [dict(r, expect=cases[r["command"]].expect if r["command"] in cases else "-",
                 at_least=r["command"] in cases and cases[r["command"]].fused_rnn) for r in rows]


def table(path: Path = OUT) -> str:
    """The markdown table README.md shows (`<!-- estimate -->`), from the estimates' record."""
    rows = published(path)
    if rows is None:
        return f"(no table: {path} does not exist; python -m milestones.estimate writes it)\n"
    lines = ["| command | the paper's result | steps | batch | prec | GFLOP a step | kernels a step | bound by | "
             "H100 (est.) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        at_least = "≥ " if r["at_least"] else ""
        lines.append(f"| {r['command']} | {r['expect']} | {r['steps']:,} | {r['batch']:,} | "
                     f"{r['precision']} | {at_least}{r['flops_per_step'] / 1e9:,.1f} | {at_least}"
                     f"{r['kernels_per_step']:,} | {r['bound']} | {at_least}{duration(r['hours'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m milestones.estimate", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(OUT), help="the record to write (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="data root (default: $MILESTONES_DATA)")
    args = p.parse_args(argv)

    def run():
        rows = []
        for case in CASES:
            print(f"estimate: train {case.milestone} {case.flags}", file=sys.stderr)
            rows.append(estimate(count(case, args.data_dir), PEAK_FLOPS[GPU]))
        rec = dict(gpu=GPU, peak_bf16=PEAK_FLOPS[GPU], mfu=MFU, launch_seconds=LAUNCH_SECONDS,
                   counted_on=machine(), rows=rows)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
        print(table(Path(args.out)))
    exit_on_user_error(run)


if __name__ == "__main__":
    main()
