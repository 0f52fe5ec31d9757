"""No host round trip in a training step between log points. On a GPU each one stalls the host until the device
has caught up (a value read back), or makes the step wait on a blocking copy (a tensor made from host data, or
moved between devices), and a small net's step is shorter than either. A CPU has no such cost, so these tests count
the operations themselves: aten._local_scalar_dense (.item(), float(), int(), bool() of a tensor), calls of
torch.tensor (a new tensor from Python data: on a GPU, a copy from the host) and copies between devices. Only those
our own code asks for are counted; torch's (Adam reading its step count, kept on the CPU for that reason) are not.
(`t[i] = 1` makes a scalar tensor too, but on a GPU that is a fill, not a copy: it is not counted.)"""

import importlib
import os
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

pytestmark = pytest.mark.device  # `check` runs these on the device it checks

aten = torch.ops.aten
TORCH = os.path.dirname(torch.__file__)
DISPATCH = ("torch/_dynamo/eval_frame.py", "torch/_compile.py", "torch/utils/_python_dispatch.py")


class HostTrips(TorchDispatchMode):
    """Records (kind, the function that asked) for each host round trip: kind is read, from_host or copy."""

    def __init__(self):
        super().__init__()
        self.events = []

    def record(self, kind: str, frame) -> None:
        while frame.f_code.co_filename.endswith(DISPATCH):
            frame = frame.f_back
        if not frame.f_code.co_filename.startswith(TORCH):  # ours, not torch's own
            self.events.append((kind, frame.f_code.co_name))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is aten._local_scalar_dense.default:
            self.record("read", sys._getframe(1))
        elif func in (aten._to_copy.default, aten.copy_.default) and args[0].device != out.device:
            self.record("copy", sys._getframe(1))
        return out

    def __enter__(self):
        self._tensor = torch.tensor

        def tensor(*args, **kwargs):
            self.record("from_host", sys._getframe(1))
            return self._tensor(*args, **kwargs)

        torch.tensor = tensor
        return super().__enter__()

    def __exit__(self, *exc):
        torch.tensor = self._tensor
        return super().__exit__(*exc)


def trips_per_step(monkeypatch, module, main, argv) -> list[list]:
    """main(argv) run with `module`'s Session counting: the host trips of each training step that has no log or
    evaluation in it, the first step (set-up) left out. A step here runs from one Session.step call to the next."""
    trips, steps = HostTrips(), []

    class Counting(module.Session):
        logged = False

        def step(self, n, spent=None):
            if not self.logged:
                steps.append(list(trips.events))
            trips.events.clear()
            self.logged = False
            super().step(n, spent)

        def log(self, *args, **kwargs):
            self.logged = True
            return super().log(*args, **kwargs)

    monkeypatch.setattr(module, "Session", Counting)
    with trips:
        main(argv)
    return steps[1:]


def test_03_pca_lighting_moves_its_eigenvectors_to_the_device_once():
    data = importlib.import_module("milestones.03_alexnet.data")
    g = torch.Generator().manual_seed(0)
    eigval, eigvec = torch.rand(3, generator=g), torch.linalg.qr(torch.randn(3, 3, generator=g))[0]
    aug = data.Augment(torch.device("meta"), 32, 4, (0.5,) * 3, (0.25,) * 3, eigval, eigvec, jitter=0.1)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)  # a uint8 batch, on the host
    aug.train(x)  # the first batch may make constants (the normalisation's mean and std, once per device)
    with HostTrips() as trips:
        for _ in range(3):
            assert aug.train(x).device.type == "meta"
    assert trips.events == [("copy", "train")] * 3  # the batch itself, nothing else


def test_03_training_steps_make_no_host_trip(monkeypatch, tmp_path, data_root):
    train = importlib.import_module("milestones.03_alexnet.train")
    recipe = importlib.import_module("milestones.03_alexnet.recipe")
    steps = trips_per_step(monkeypatch, recipe, train.main, [
        "--preset", "smoke", "--steps", "6", "--log-every", "3", "--out-dir", str(tmp_path), "--threads", "1"])
    assert len(steps) >= 3 and steps == [[]] * len(steps), steps


def test_05_adding_steps_read_only_the_sequence_length(monkeypatch, tmp_path):
    """Batches of 500: the paper's stop rule (the latest 2,000 sequences) is checked from step 4 on. The one read
    left is the length L of the next batch, a shape the host must know; on a GPU train_one draws it from a CPU
    generator, so it is no device sync there."""
    train = importlib.import_module("milestones.05_lstm.train")
    adding = importlib.import_module("milestones.05_lstm.adding")
    steps = trips_per_step(monkeypatch, adding, train.main, [
        "--experiment", "adding", "--preset", "smoke", "--lengths", "10", "--models", "lstm", "--steps", "8",
        "--batch-size", "500", "--log-every", "100", "--eval-every", "0", "--out-dir", str(tmp_path), "--threads", "1"])
    assert len(steps) == 7 and steps == [[("read", "adding_batch")]] * 7, steps
