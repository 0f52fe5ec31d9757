"""A training budget measured on the experiment's own clock: CPU seconds of this process on a CPU (fair to two
arms run one after the other on a shared machine), wall seconds on a GPU; evaluation is left out. Used by the
equal-budget comparisons, vs_lstm and vs_rnn."""

import time

import torch


class Budget:
    """An arm's spending: training seconds (evaluation left out) against --budget-seconds, or steps against
    the step total (None when the budget alone ends the arm). `done` is the share of the schedule after the
    warm-up spent, for the cosine."""

    def __init__(self, seconds: float, total: int, warmup: int, device):
        self.seconds, self.total, self.warmup = seconds, total, warmup
        self.device = device
        self.clock = time.process_time if device.type == "cpu" else time.perf_counter
        self.used = 0.0  # training seconds on self.clock
        self.wall = 0.0  # the same in wall seconds
        self.at_warmup = None  # seconds used when the warm-up ended

    def start(self):
        self._t, self._w = self.clock(), time.perf_counter()

    def stop(self, steps: int):
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the step's time, not its launch time
        self.used += self.clock() - self._t
        self.wall += time.perf_counter() - self._w
        if steps == self.warmup:
            self.at_warmup = self.used

    def done(self, step: int) -> float:
        if not self.seconds:
            return (step - self.warmup) / max(1, self.total - self.warmup)
        if self.at_warmup is None:
            return 0.0
        return (self.used - self.at_warmup) / max(1e-9, self.seconds - self.at_warmup)
