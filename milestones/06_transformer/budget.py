"""A training budget measured on the experiment's own clock: CPU seconds of this process on a CPU (fair to two
arms run one after the other on a shared machine), GPU seconds on a GPU (CUDA events around each step, added up
only when read, so that a run ended by its step count never waits for the GPU); evaluation is left out. Used by
the equal-budget comparisons, vs_lstm and vs_rnn."""

import time

import torch


class Budget:
    """An arm's spending: training seconds (evaluation left out) against --budget-seconds, or steps against
    the step total (None when the budget alone ends the arm). `done` is the share of the schedule after the
    warm-up spent, for the cosine."""

    def __init__(self, seconds: float, total: int, warmup: int, device):
        self.seconds, self.total, self.warmup = seconds, total, warmup
        self.cuda = device.type == "cuda"
        self.clock = time.process_time if device.type == "cpu" else time.perf_counter  # CUDA: events instead
        self._used = 0.0  # training seconds on the clock, up to the steps still pending
        self._wall = 0.0  # the same in wall seconds (CPU; on a GPU `wall` is `used`)
        self._pending = []  # CUDA: (start, end) events of the steps not added up yet
        self.at_warmup = None  # seconds used when the warm-up ended

    def start(self):
        if self.cuda:
            self._begin = torch.cuda.Event(enable_timing=True)
            self._begin.record()
        else:
            self._t, self._w = self.clock(), time.perf_counter()

    def stop(self, steps: int):
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((self._begin, end))
        else:
            self._used += self.clock() - self._t
            self._wall += time.perf_counter() - self._w
        if steps == self.warmup:
            self.at_warmup = self.used

    @property
    def used(self) -> float:
        """Training seconds so far (on a GPU this waits for the steps queued)."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self._used += sum(a.elapsed_time(b) for a, b in self._pending) / 1000  # ms -> s
            self._pending.clear()
        return self._used

    @property
    def wall(self) -> float:
        """The same steps in wall seconds (on a GPU: the same as `used`)."""
        return self.used if self.cuda else self._wall

    def spent(self):
        """What Session.step needs: the seconds used when they end the run (a seconds budget), else None."""
        return self.used if self.seconds else None

    def done(self, step: int) -> float:
        if not self.seconds:
            return (step - self.warmup) / max(1, self.total - self.warmup)
        if self.at_warmup is None:
            return 0.0
        return (self.used - self.at_warmup) / max(1e-9, self.seconds - self.at_warmup)
