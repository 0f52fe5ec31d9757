"""01_dnn: the 1986 backprop MLP — its equations, its tasks, MNIST, and the run-record/CLI contract."""

import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, only_run_dir, read_summary, run_cli
from tests.conftest import built as conftest_built

dnn_model = importlib.import_module("milestones.01_dnn.model")
dnn_train = importlib.import_module("milestones.01_dnn.train")
MLP, squared_error = dnn_model.MLP, dnn_model.squared_error


def test_autograd_matches_the_generalized_delta_rule_in_float64():
    torch.manual_seed(0)
    model = MLP([6, 5, 3, 2], "sigmoid", init_range=0.5).double()
    x = torch.rand(7, 6, dtype=torch.float64)
    d = torch.rand(7, 2, dtype=torch.float64)
    squared_error(model(x), d).backward()
    by_hand = dnn_model.generalized_delta_rule(model, x, d)
    for layer, (dw, db) in zip(model.layers, by_hand):
        torch.testing.assert_close(layer.weight.grad, dw, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(layer.bias.grad, db, rtol=1e-12, atol=1e-14)


def test_squared_error_is_half_the_summed_square_of_logistic_outputs():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    target = torch.tensor([1, 0])  # one-hot: [[0, 1], [1, 0]]
    y = torch.sigmoid(logits)
    expected = 0.5 * ((y[0, 0] - 0) ** 2 + (y[0, 1] - 1) ** 2 + (y[1, 0] - 1) ** 2 + (y[1, 1] - 0) ** 2)
    torch.testing.assert_close(squared_error(logits, target), expected)


def test_symmetry_task_is_the_papers_64_patterns_with_8_symmetric():
    x, d = dnn_train.symmetry_patterns()
    assert x.shape == (64, 6) and d.shape == (64, 1)
    assert int(d.sum()) == 8
    assert d[x.tolist().index([1, 0, 1, 1, 0, 1])] == 1 and d[x.tolist().index([1, 1, 0, 0, 0, 0])] == 0


def test_paper_init_is_uniform_in_plus_minus_0_3_and_6_2_1_has_17_weights():
    # Rumelhart, Hinton & Williams 1986, symmetry example: "initial weights ... uniformly distributed between
    # -0.3 and 0.3" (biases too: a bias is a weight from an always-on unit, eq. 1)
    torch.manual_seed(0)
    assert sum(p.numel() for p in MLP([6, 2, 1], "sigmoid", init_range=0.3).parameters()) == 17
    net = MLP([784, 100, 10], "sigmoid", init_range=0.3)
    for p in net.parameters():  # every tensor within [-0.3, 0.3]; the large ones fill it, not a narrower range
        assert p.abs().max() <= 0.3 and (p.numel() < 1000 or (p.max() > 0.29 and p.min() < -0.29))
    w = net.layers[0].weight
    assert abs(w.std().item() - 0.3 / 3 ** 0.5) < 0.002  # uniform, not normal: std r / sqrt(3)
    assert abs((w.abs() < 0.15).float().mean().item() - 0.5) < 0.01  # half the mass within r/2


def test_torch_sgd_with_momentum_is_eq_9():
    """Rumelhart et al. 1986, eq. 9: dw(t) = -eps dE/dw(t) + alpha dw(t-1), at eps 0.1 and alpha 0.9, step by
    step against the optimiser the symmetry run builds (SGD, lr = eps, momentum = alpha)."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    by_hand, dw = w.detach().clone(), torch.zeros(2)
    for g in ([0.5, -1.0], [2.0, 0.25], [-1.0, 1.0]):
        w.grad = torch.tensor(g)
        opt.step()
        dw = -0.1 * torch.tensor(g) + 0.9 * dw
        by_hand += dw
        torch.testing.assert_close(w.detach(), by_hand)


def built(monkeypatch, argv) -> dict:
    """What `train.main(argv)` builds for its (first) training loop (conftest.built). Nothing is trained."""
    return conftest_built(monkeypatch, dnn_train, dnn_train.main, argv)


def test_symmetry_paper_preset_is_the_papers_rule_through_the_real_code_path(tmp_path, monkeypatch):
    """The 6-2-1 symmetry run as the 1986 paper describes it: all 64 patterns in one sweep, E summed over them,
    one weight change per sweep by eq. 9 with eps 0.1 and alpha 0.9, weights uniform in +-0.3."""
    optimisers, models, batches = [], [], []

    class RecordingSGD(torch.optim.SGD):
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            optimisers.append(self)

    def recording_mlp(*args, **kwargs):
        net = MLP(*args, **kwargs)
        net.register_forward_pre_hook(lambda m, i: batches.append(i[0].shape[0]))
        models.append((args, kwargs, [p.detach().clone() for p in net.parameters()]))
        return net

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    monkeypatch.setattr(dnn_train, "MLP", recording_mlp)
    card = dnn_train.main(["--preset", "paper", "--seeds", "1", "--seed", "3", "--epochs", "1000",  # a cap, ours
                           "--out-dir", str(tmp_path)])
    (opt,) = optimisers
    g = opt.param_groups[0]
    # Rumelhart et al. 1986, symmetry example: "eps = 0.1 and alpha = 0.9" in eq. 9, dw(t) = -eps dE/dw + alpha
    # dw(t-1), which is PyTorch's heavy ball with no dampening, no Nesterov and no decay at a constant eps
    assert (g["lr"], g["momentum"], g["dampening"], g["nesterov"], g["weight_decay"]) == (0.1, 0.9, 0, False, 0)
    ((args, kwargs, init),) = models
    assert args == ([6, 2, 1], "sigmoid") and kwargs == {"init_range": 0.3}  # 6-2-1, logistic units, +-0.3
    assert all(p.abs().max() <= 0.3 for p in init)
    assert set(batches) == {64}  # every forward pass sees all 64 patterns: one weight change per sweep
    # the paper's rule end to end: seed 3 solves it in 572 sweeps (measured: `python -m milestones train 01_dnn
    # --preset paper --seeds 2 --seed 3` gives 572 and 18,675); E averaged instead of summed, another eps or
    # alpha, or another init range each give another count
    assert card["sweeps_per_seed"] == [572] and card["paper_value"] == 1425  # the paper: 1,425 sweeps


def test_mnist_paper_preset_builds_the_1986_rule_case_by_case(tmp_path, data_root, monkeypatch):
    """--experiment mnist --preset paper: the 1986 rule (NOTES.md, 'paper') on 784-800-10, as train.py builds it."""
    got = built(monkeypatch, ["--experiment", "mnist", "--preset", "paper", "--out-dir", str(tmp_path)])
    cfg, model, opt, sched = got["cfg"], got["model"], got["opt"], got["sched"]
    # logistic hidden and output units, squared error (eqs. 2, 3), on the 784-800-10 net of Simard et al. 2003
    assert model.sizes == [784, 800, 10] and model.activation == "sigmoid" and cfg.loss == "mse"
    for p in model.parameters():  # the symmetry run's init: uniform in +-0.3, biases too
        assert p.abs().max() <= 0.3 and (p.numel() < 1000 or (p.max() > 0.29 and p.min() < -0.29))
    # eq. 9 with the symmetry run's eps 0.1 and alpha 0.9, no decay, no Nesterov
    g = opt.param_groups[0]
    assert type(opt) is torch.optim.SGD
    assert (g["lr"], g["momentum"], g["dampening"], g["nesterov"], g["weight_decay"]) == (0.1, 0.9, 0, False, 0.0)
    # the weights change after every case (batch 1): 60,000 changes a pass, at a constant eps
    assert cfg.batch_size == 1 and got["per_epoch"] == 60_000 and got["total"] == 20 * 60_000
    assert [sched.lr_lambdas[0](s) for s in (0, 600_000, 1_199_999)] == [1.0, 1.0, 1.0]


def test_overfits_one_batch_of_real_digits(data_root):
    from common import data
    x, y = data.load("mnist", data_root)["train"]
    x, y = x[:64].float() / 255, y[:64]
    torch.manual_seed(0)
    model = MLP([784, 64, 10], "relu", init_range=None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = dnn_model.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01
    assert (model(x).argmax(1) == y).all()


def test_mnist_loader_reads_the_real_files(data_root):
    from common import data
    splits = data.load("mnist", data_root)
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    assert xtr.shape == (60000, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert xtr.dtype == torch.uint8 and ytr.dtype == torch.int64
    assert torch.bincount(ytr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(yte).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert xtr.max() == 255 and xtr.min() == 0


def test_symmetry_smoke_run_through_the_cli(tmp_path):
    r = run_cli("train", "01_dnn", "--preset", "smoke", "--out-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    summary = read_summary(only_run_dir(tmp_path, "01_dnn"))
    assert summary["paper_value"] == 1425 and summary["params"] == 17
    assert len(summary["sweeps_per_seed"]) == 2
    assert "paper: 1,425" in r.stdout


def _mnist(tmp_path, *flags):
    return dnn_train.main(["--experiment", "mnist", "--preset", "smoke", "--out-dir", str(tmp_path), *flags])


def test_mnist_smoke_learns_and_names_the_model(tmp_path, data_root):
    card = _mnist(tmp_path)  # the run record itself is checked for every milestone in test_contract.py
    assert card["model"] == "mlp-784-32-10-relu-ce" and card["steps"] == 20 and card["params"] == 784 * 32 + 32 + 330
    assert card["value"] < 0.6  # 20 steps of 64 take it from chance (0.9) to 44% (seed 0); a wrong gradient would not
    assert card["paper_value"] is None  # only the 784-800-10 net is the paper's


def test_bf16_autocast_runs_on_cpu(tmp_path, data_root):
    card = _mnist(tmp_path, "--precision", "bf16")
    assert card["precision"] == "bf16" and card["value"] < 0.6  # the fp32 smoke's 44%, give or take bf16's rounding


@pytest.mark.skipif(not shutil.which("torchrun") and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_two_process_torchrun_with_gloo(tmp_path, data_root):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "milestones", "train", "01_dnn",
           "--experiment", "mnist", "--preset", "smoke", "--out-dir", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = read_summary(only_run_dir(tmp_path, "01_dnn"))  # one run directory: only rank 0 wrote
    assert summary["world_size"] == 2 and summary["steps"] == 20


@pytest.mark.parametrize("args, message", [
    (["train", "99_nope"], "unknown milestone"),
    (["train", "01_dnn", "--no-such-flag", "1"], "unrecognized arguments"),
    (["train", "01_dnn", "--seeds", "3", "--experiment", "mnist"], "--seeds is for --experiment symmetry or xor"),
    (["train", "01_dnn", "--hidden", "ten"], "--hidden takes positive layer sizes"),
    (["train", "01_dnn", "--lr", "-1"], "--lr must be positive"),
    (["train", "01_dnn", "--experiment", "mnist", "--lrs", "0.1"], "--lrs is for --experiment mnist_1986_vs_modern"),
    (["train", "01_dnn", "--experiment", "mnist_1986_vs_modern", "--preset", "smoke", "--lrs", "0.1,x"],
     "--lrs takes a comma-separated list"),
    (["train", "01_dnn", "--experiment", "mnist_1986_vs_modern", "--preset", "smoke", "--val-size", "0"],
     "needs --val-size > 0"),
])
def test_bad_input_is_a_clear_message_not_a_traceback(args, message, tmp_path):
    r = run_cli(*args, "--out-dir", tmp_path) if args[0] == "train" and len(args) > 2 else run_cli(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_dataset_files_name_what_to_put_where(tmp_path):
    r = run_cli("train", "01_dnn", "--experiment", "mnist", "--data-dir", tmp_path, "--out-dir", tmp_path / "runs",
                env={"MILESTONES_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "train-images-idx3-ubyte.gz" in r.stderr and str(tmp_path / "MNIST" / "raw") in r.stderr


def test_1986_vs_modern_sweeps_each_arm_and_picks_its_rate_on_validation(tmp_path, data_root):
    cards = dnn_train.main(["--experiment", "mnist_1986_vs_modern", "--preset", "smoke", "--out-dir", str(tmp_path)])
    assert list(cards) == ["1986", "1986_fanin", "modern"]
    assert cards["1986"]["model"].endswith("sigmoid-mse") and cards["modern"]["model"].endswith("relu-ce")
    runs = [json.loads((d / "config.json").read_text())["config"] for d in (tmp_path / "01_dnn").iterdir()]
    assert len(runs) == 6  # three arms x the smoke preset's two rates, a record each
    assert sorted((r["activation"], r["init_range"], r["lr"]) for r in runs) == [
        ("relu", 0.0, 0.01), ("relu", 0.0, 0.1), ("sigmoid", 0.0, 0.01), ("sigmoid", 0.0, 0.1),
        ("sigmoid", 0.3, 0.01), ("sigmoid", 0.3, 0.1)]
    assert all(r["val_size"] == 500 for r in runs)
    for card in cards.values():
        assert [s["lr"] for s in card["sweep"]] == [0.01, 0.1]
        best = min(card["sweep"], key=lambda s: s["val_error"])
        assert card["lr"] == best["lr"] and card["value"] == best["test_error"]  # chosen on val, reported on test
        assert card["val_error"] == best["val_error"] and card["val_size"] == 500


def test_every_rate_of_a_sweep_starts_from_the_same_weights(tmp_path, data_root, monkeypatch):
    first_weights = []

    def recording_mlp(*args, **kwargs):
        net = MLP(*args, **kwargs)
        first_weights.append((net.activation, kwargs["init_range"], net.layers[0].weight.detach().clone()))
        return net

    monkeypatch.setattr(dnn_train, "MLP", recording_mlp)
    dnn_train.main(["--experiment", "mnist_1986_vs_modern", "--preset", "smoke", "--out-dir", str(tmp_path)])
    assert len(first_weights) == 6  # three arms x two rates
    for a, b in zip(first_weights[::2], first_weights[1::2]):  # an arm's two rates, one after the other
        assert a[:2] == b[:2] and torch.equal(a[2], b[2])
    assert not torch.equal(first_weights[0][2], first_weights[2][2])  # the paper's init is not the fan-in one


def test_1986_vs_modern_records_a_diverged_rate_and_keeps_sweeping(tmp_path, monkeypatch):
    def run_mnist(cfg, rt, argv):
        if cfg.lr == 0.1 and cfg.activation == "relu":
            raise dnn_train.Diverged("loss is nan at step 3")
        return dict(model=cfg.activation, value=0.5 - cfg.lr, val_error=0.4 - cfg.lr, train_seconds=0.0)

    monkeypatch.setattr(dnn_train, "run_mnist", run_mnist)
    cards = dnn_train.main(["--experiment", "mnist_1986_vs_modern", "--preset", "smoke", "--out-dir", str(tmp_path)])
    assert cards["1986"]["lr"] == 0.1 and cards["modern"]["lr"] == 0.01
    assert cards["modern"]["sweep"][1] == dict(lr=0.1, val_error=None, test_error=None)


def test_the_sweep_count_is_exact_when_the_solved_flag_is_read_only_now_and_then(monkeypatch):
    """On a GPU the loop reads its solved flag every 100 sweeps (each read waits for the device): the count it
    returns must still be the first solved sweep, as reading it every sweep gives."""
    from types import SimpleNamespace

    train = importlib.import_module("milestones.01_dnn.train")
    x, d = train.symmetry_patterns()
    cfg = SimpleNamespace(activation="sigmoid", init_range=0.3, lr=0.1, momentum=0.9, loss="mse", epochs=3000)
    every_sweep = train.sweeps_to_solve(cfg, x, d, [6, 2, 1], seed=3)
    monkeypatch.setattr(train, "check_every", lambda device: 100)
    assert every_sweep == 572 and train.sweeps_to_solve(cfg, x, d, [6, 2, 1], seed=3) == every_sweep
    cfg.epochs = 500  # not solved within the budget: None either way
    assert train.sweeps_to_solve(cfg, x, d, [6, 2, 1], seed=3) is None
