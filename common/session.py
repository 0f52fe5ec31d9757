"""A training loop's bookkeeping, written once: everything a loop does besides the model's own math.

A milestone's train.py keeps its recipe in sight (batches, forward, loss, optimizer step) and hands the
rest to a Session:

    sess = Session(cfg, rt, run, total=total, steps_per_epoch=len(train))
    sess.attach(model, opt, sched, scaler)        # on --resume: weights, optimizer, step, time, RNG restored
    with sess:                                    # Ctrl-C or SIGTERM: save at the step reached, say how to resume
        while sess.running:
            epoch, start = sess.position()
            for x, y in train.batches(epoch, start):
                loss = F.cross_entropy(net(x), y)
                optimizer_step(loss, opt, scaler)
                sched.step()
                sess.step(len(y))                 # counts the step: progress bar, throughput, periodic checkpoint
                if sess.due("log"):
                    sess.log("train", loss=loss, lr=sched.get_last_lr()[0])
                if sess.due("eval"):
                    sess.log("test", **evaluate(...))
                if not sess.running:
                    break
    card = sess.summary(metric="test_error", value=sess.results["test_error"], ...)   # final save + summary.json

What it owns:
- resume: the step, the elapsed training time and whatever the loop stored (`sess.results`, `extra`) come back;
- when to log, evaluate and checkpoint (--log-every, --eval-every, --ckpt-every; always at the last step);
- a time budget, when given (`budget_seconds`): the loop reports the seconds it has spent on its own clock with
  each step (`sess.step(n, spent=...)`), the step that spends the budget is the last, and the progress bar counts
  budget seconds, not steps;
- throughput: wall time between steps, leaving out the first WARMUP steps after a (re)start (compilation,
  autotuning) and the time spent in evaluation and checkpointing;
- stopping cleanly: the first Ctrl-C or SIGTERM (what a cluster scheduler sends before preempting a job) lets
  the current step finish, saves the state at the step reached and exits 130 / 143 with the --resume command;
  a second one stops at once, without saving. Under torchrun the ranks agree at each log point to stop together;
- the single final save, with the results, and the summary card's common fields.
"""

import math
import signal
import sys
import threading
import time

import torch

from .checkpoint import find_checkpoint, load_checkpoint, restore, save_checkpoint
from .config import to_dict
from .device import count_params
from .errors import UserError
from .logging import RunLogger, progress, seconds_since_start

WARMUP = 2  # steps left out of the throughput after every (re)start
# Callables `watch(session, n)` told of every step, after it is counted: how `python -m milestones check` measures
# a real training run (step times, host syncs, FLOPs, compiles) without a line of it in the loops. Empty otherwise.
STEP_WATCHERS: list = []
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as a shell reports it


def open_run(cfg, rt, milestone: str, model_name: str, argv=None) -> RunLogger:
    """The run directory: a new one, or the one a --resume checkpoint lives in (it keeps writing there)."""
    run_dir = find_checkpoint(cfg.resume).parent if cfg.resume else None
    return RunLogger(milestone, model_name, to_dict(cfg), cfg.out_dir, rt, run_dir=run_dir, argv=argv, cfg=cfg)


class Diverged(UserError):
    """The training loss became NaN or infinite (a user error: the recipe's rate; comparisons may record it)."""


def check_finite(loss, step: int, hint: str = "lower --lr, or try --precision fp32") -> float:
    """The loss as a float; a clear error (not silent garbage) once it is NaN or infinite."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise Diverged(f"loss is {value} at step {step}: training diverged ({hint}); "
                        f"the last checkpoint, if any, is unaffected")
    return value


class Stop(Exception):
    """Raised at a step boundary once Ctrl-C or SIGTERM has asked the run to stop."""


class Session:
    """One training loop inside a run: its step counter, clock, progress bar, schedule and checkpoint."""

    def __init__(self, cfg, rt, run: RunLogger, total: int | None, steps_per_epoch: int, *, checkpoint=None,
                 tag: dict = None, desc: str = None, unit: str = "examples", echo: bool = True,
                 budget_seconds: float = 0.0):
        if budget_seconds < 0:
            raise UserError(f"the time budget must be >= 0 seconds, got {budget_seconds:g}")
        if total is None and not budget_seconds:
            raise UserError("nothing to train: no step total and no time budget")
        if total is not None and total < 1:
            raise UserError(f"nothing to train: {total} steps (check --steps, --epochs and the data size)")
        self.cfg, self.rt, self.run = cfg, rt, run
        # the step total; with a budget and no step total, none (the budget's last step sets it)
        self.total = total if total is not None else math.inf
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.budget_seconds = budget_seconds  # 0 = no budget: the steps alone end the loop
        self.spent = 0.0  # budget seconds spent, as the loop last reported them
        self.checkpoint_path = checkpoint or run.checkpoint_path
        self.tag = dict(tag or {})
        self.unit = unit  # what step(n) counts: "examples" or "tokens"
        self.echo = echo  # print a line for every evaluation (off for runs of many small nets)
        self.desc = desc or f"{run.milestone} {run.model}"
        self.step_count = 0
        self.results = {}  # the latest evaluation values (and anything the loop wants kept in checkpoints)
        self.extra = None  # () -> dict of more state to checkpoint (e.g. an LSTM's carried hidden state)
        self._objects = {}
        self._resumable = True
        self._seconds_before = 0.0  # training time of the runs this one resumes
        self._count, self._seconds, self._skip, self._mark = 0, 0.0, WARMUP, None
        self._t0 = None  # when the loop was entered (None outside it)
        self._stop_signal = None
        self._old_handlers = {}
        self._bar = None
        self._last_saved = None

    # ---- resume --------------------------------------------------------------------------------------
    def attach(self, model, optimizer=None, scheduler=None, scaler=None, extra=None, resume=True) -> dict:
        """Register what a checkpoint holds; on --resume, restore it. Returns the loaded checkpoint (or {})."""
        self.model = model
        self._objects = dict(optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        self.extra = extra
        self._resumable = resume
        if not (resume and self.cfg.resume):
            return {}
        state = load_checkpoint(self.cfg.resume)
        owner = state.get("milestone")
        if owner is not None and owner != self.run.milestone:
            raise UserError(f"{self.cfg.resume} is a checkpoint of {owner}, not {self.run.milestone}")
        restore(state, model, **self._objects)
        self.step_count = int(state.get("step", 0))
        self._seconds_before = float(state.get("train_seconds", 0.0))
        self.results = dict(state.get("results", {}))
        self._last_saved = self.step_count
        return state

    # ---- the loop --------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.step_count < self.total

    def position(self) -> tuple[int, int]:
        """(epoch, batch within it) of the next step: where the data loader should start."""
        return divmod(self.step_count, self.steps_per_epoch)

    @property
    def epoch(self) -> float:
        return self.step_count / self.steps_per_epoch

    def step(self, n: int, spent: float = None) -> None:
        """One optimizer step done, on `n` examples (or tokens) summed over ranks. With a budget, `spent` is the
        budget seconds spent so far on the loop's own clock (it decides what counts, e.g. CPU seconds of
        training steps only); the step that reaches the budget is the last."""
        now = time.perf_counter()
        if self._mark is not None:
            if self._skip > 0:
                self._skip -= 1
            else:
                self._seconds += now - self._mark
                self._count += n
        self.step_count += 1
        if self.budget_seconds:
            if spent is None:
                raise TypeError("a session with a time budget needs step(n, spent=seconds spent so far)")
            self.spent = spent
            if spent >= self.budget_seconds:
                self.total = self.step_count  # the budget ends the run here: this step is the last
        if self._bar is not None:
            self._bar.update(min(self.spent, self.budget_seconds) - self._bar.n if self.budget_seconds else 1)
        if self.due("ckpt") and self.running:  # the last one is written by summary(), with the results
            self.save()
        self._honour_stop()
        for watch in STEP_WATCHERS:
            watch(self, n)
        self._mark = time.perf_counter()  # what the watchers spent is not training time

    def due(self, what: str) -> bool:
        """Is a log / eval / ckpt due at the step just taken? (Always at the last step.)"""
        every = {"log": self.cfg.log_every, "eval": self.cfg.eval_every or self.steps_per_epoch,
                 "ckpt": self.cfg.ckpt_every}[what]
        return self.step_count % every == 0 or self.step_count == self.total

    def meter(self) -> dict:
        """What the progress bar shows: done of total, in steps or (with a budget) budget seconds, its estimate
        of the wall seconds left (None before it has a rate), and its line as drawn."""
        if self.budget_seconds:
            done, total, unit = min(self.spent, self.budget_seconds), self.budget_seconds, "s"
        else:
            done, total, unit = self.step_count, self.total, "step"
        rate = self._bar.format_dict["rate"] if self._bar is not None else None  # tqdm's: units per wall second
        return dict(done=done, total=total, unit=unit, eta_seconds=(total - done) / rate if rate else None,
                    text=str(self._bar) if self._bar is not None else "")

    @property
    def rate(self) -> float:
        """Examples (or tokens) per second over the measured steps."""
        return self._count / self._seconds if self._seconds > 0 else 0.0

    @property
    def train_seconds(self) -> float:
        """Wall time inside the loop, over this run and the ones it resumes."""
        return self._seconds_before + (time.time() - self._t0 if self._t0 is not None else 0.0)

    def mark_target(self, value: float, target: float, per_step: int) -> None:
        """A race's clock: the first time `value` (a validation loss, say) is at or below `target`, keep when, in
        `results`: wall seconds since the process started (imports included), CPU seconds, steps, examples or
        tokens (`per_step` a step), and seconds inside the loop. A resumed run's process clocks restart: the
        step and loop-time keys stay exact."""
        if value <= target and "steps_to_target" not in self.results:
            self.results.update(seconds_to_target=seconds_since_start(),
                                cpu_seconds_to_target=round(time.process_time(), 2),
                                steps_to_target=self.step_count,
                                **{f"{self.unit}_to_target": self.step_count * per_step},
                                train_seconds_to_target=round(self.train_seconds, 2))

    def reached(self) -> dict:
        """What mark_target kept (None for each key when the target was never reached)."""
        keys = ("seconds_to_target", "cpu_seconds_to_target", "steps_to_target", f"{self.unit}_to_target",
                "train_seconds_to_target")
        return {k: self.results.get(k) for k in keys}

    def log(self, split: str, **metrics) -> dict:
        """A metrics.jsonl row at the current step. Tensors are read here (the only host sync); a non-finite
        training loss is a clear error. Rows of other splits are kept in `results` as `<split>_<name>`."""
        values = {k: (v.detach().float().item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
                  for k, v in metrics.items()}
        if split == "train":
            if "loss" in values:
                check_finite(values["loss"], self.step_count)
            values[f"{self.unit}_per_second"] = self.rate
            if self._bar is not None:
                shown = {k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "error", "lr")}
                if self.budget_seconds:  # the bar counts seconds: the step goes beside it
                    shown = dict(step=self.step_count, **shown)
                self._bar.set_postfix(**shown, **{self.unit[:3] + "/s": f"{self.rate:,.0f}"})
        else:
            self.results.update({f"{split}_{k}": v for k, v in values.items()})
            if self.echo and self.rt.is_main and self._bar is not None:
                shown = ", ".join(f"{split} {k} {_short(k, v)}" for k, v in values.items())
                self._bar.write(f"{self.desc} step {self.step_count} (epoch {self.epoch:.2f}): {shown}")
        self.run.log(self.step_count, split, epoch=round(self.epoch, 4), **values, **self.tag)
        self._mark = time.perf_counter()  # evaluation time is not training time
        return values

    # ---- saving and stopping ------------------------------------------------------------------------------
    def save(self, **more):
        """Write the checkpoint (rank 0) atomically; returns its path."""
        if self.rt.is_main:
            extra = self.extra() if self.extra is not None else {}
            save_checkpoint(self.checkpoint_path, self.model, **self._objects, step=self.step_count,
                            config=to_dict(self.cfg), milestone=self.run.milestone, train_seconds=self.train_seconds,
                            results=self.results, **extra, **more)
        self._last_saved = self.step_count
        self._mark = time.perf_counter()
        return self.checkpoint_path

    def _on_signal(self, signum, frame):
        if self._stop_signal is not None:  # the second one: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        if self.rt.is_main:
            print(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop at once, unsaved)",
                  file=sys.stderr)

    def _honour_stop(self) -> None:
        stop = self._stop_signal is not None
        if self.rt.distributed:  # every rank must leave the loop at the same step
            if not self.due("log"):
                return
            flag = torch.tensor([float(stop)], device=self.rt.device)
            stop = self.rt.all_reduce_sum(flag).item() > 0
        if stop:
            raise Stop

    def __enter__(self) -> "Session":
        self._t0 = time.time()
        self._mark = time.perf_counter()
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        if self.budget_seconds:  # the bar counts budget seconds (its ETA is in wall seconds, evaluation included)
            self._bar = progress(total=self.budget_seconds, initial=min(self.spent, self.budget_seconds),
                                 desc=self.desc, rt=self.rt, unit="s", bar_format="{desc}: {percentage:3.0f}%|"
                                 "{bar}| {n:.1f}/{total:g} budget s [{elapsed}<{remaining}{postfix}]")
        else:
            self._bar = progress(total=self.total, initial=self.step_count, desc=self.desc, rt=self.rt, unit="step")
        return self

    def __exit__(self, kind, exc, tb):
        self._seconds_before, self._t0 = self.train_seconds, None  # the clock stops with the loop
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}
        self._bar.close()
        if kind is Stop:
            path = self.save()
            name = signal.Signals(self._stop_signal or signal.SIGINT).name
            if self.rt.is_main:
                then = (f"continue with: python -m milestones train {self.run.milestone} --resume {self.run.dir}"
                        if self._resumable else "this experiment does not resume: run it again to start over")
                print(f"{name}: state saved at step {self.step_count} to {path}\n{then}", file=sys.stderr)
            raise SystemExit(EXIT_CODES.get(self._stop_signal, 130)) from None
        if kind is KeyboardInterrupt:
            if self.rt.is_main:
                where = f" is at step {self._last_saved}: {self.checkpoint_path}" if self._last_saved else ": none"
                print(f"\nstopped at once, not saved; the last checkpoint{where}", file=sys.stderr)
            raise SystemExit(130) from None
        return False

    # ---- the end -----------------------------------------------------------------------------------------
    def finish(self, **more) -> None:
        """The single final save (with the results) once the loop is done."""
        self.save(**more)

    def card(self) -> dict:
        """The summary fields a session knows: size, time, speed, progress."""
        card = dict(params=count_params(self.model), train_seconds=round(self.train_seconds, 2),
                    examples_per_second=round(self.rate, 1), steps=self.step_count, epochs=round(self.epoch, 3))
        if self.unit == "tokens":
            card["tokens_per_second"] = card["examples_per_second"]
        return card

    def summary(self, **card) -> dict:
        """Final save, then summary.json with the session's and the run's common fields filled in."""
        self.finish()
        return self.run.summary(**{**self.card(), **card})


def _short(key: str, v) -> str:
    if isinstance(v, float):
        return f"{v:.2%}" if "error" in key or "acc" in key else f"{v:.4f}"
    return str(v)
