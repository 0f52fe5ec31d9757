"""One contract, checked over the whole course: every built milestone's train script writes the run record,
resumes exactly, survives Ctrl-C and SIGTERM, and answers user mistakes with one line and exit status 2.
A milestone that lands (06, 07, ...) is checked by being added to CASES; a test fails until it is."""

import ast
import dataclasses
import importlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from common.config import preset_experiments
from common.device import pick_device
from common.logging import SUMMARY_KEYS
from common.session import Session
from milestones import COURSE, is_built
from tests.conftest import REPO, only_run_dir, read_metrics, read_summary

BUILT = [m for m in COURSE if is_built(m)]

# Each milestone's contract is checked on its resumable single-run experiment at --preset smoke, with a schedule
# that does not depend on the run's length (so N/2 steps + resume to N equals N steps) and, where the recipe has
# any, randomness beyond the data order (so the RNG state must resume too)
CASES = {
    "01_dnn": ["--experiment", "mnist", "--schedule", "constant"],
    "02_cnn_lenet": ["--schedule", "constant", "--distort"],
    "03_alexnet": ["--schedule", "plateau", "--jitter", "0.1"],
    "04_resnet": ["--lr-drops", ""],
    "05_lstm": ["--experiment", "ptb", "--dropout", "0.3"],
    "06_transformer": ["--experiment", "translate"],
    "07_vae_gan_diffusion": ["--model", "gan"],
}


def train_module(mid):
    return importlib.import_module(f"milestones.{mid}.train")


LOG_EVERY = 3  # not a preset's value: the runs must honour the flag
_DEV = pick_device("auto")  # the device a run picks by itself here: the contract holds on any of them
DEVICE = torch.cuda.get_device_name(_DEV) if _DEV.type == "cuda" else _DEV.type


def smoke(mid, out, *flags):
    """A smoke run in this process (fast, and lets a test reach into it); returns its run directory."""
    train_module(mid).main([*CASES[mid], "--preset", "smoke", "--log-every", str(LOG_EVERY), "--out-dir", str(out),
                            "--deterministic", *flags])  # on a GPU, exact resume needs deterministic kernels
    return only_run_dir(out, mid)


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict):
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory, data_root):
    """One uninterrupted smoke run per milestone, shared by the resume and signal tests."""
    runs = {}

    def get(mid):
        if mid not in runs:
            runs[mid] = smoke(mid, tmp_path_factory.mktemp(f"full-{mid}"))
        return runs[mid]
    return get


def test_every_built_milestone_has_a_contract_case():
    assert sorted(CASES) == sorted(BUILT), "add the new milestone's resumable experiment to CASES"


@pytest.mark.device  # `check` runs it on the device it checks
@pytest.mark.parametrize("mid", BUILT)
def test_smoke_run_writes_the_run_record(mid, full_runs):
    run = full_runs(mid)
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "summary.json", "checkpoint.pt"}
    card = read_summary(run)
    assert set(SUMMARY_KEYS) <= set(card) and ("steps" in card or "epochs" in card)
    assert card["milestone"] == mid and card["device"] == DEVICE and card["world_size"] == 1
    assert card["preset"] == "smoke" and card["params"] > 0 and card["train_seconds"] > 0
    record = json.loads((run / "config.json").read_text())
    assert {"milestone", "model", "config", "argv", "torch", "device", "git_commit"} <= set(record)
    assert record["milestone"] == mid
    rows = read_metrics(run)
    assert "train" in {r["split"] for r in rows} and len({r["split"] for r in rows}) >= 2  # train + an evaluation
    assert all({"step", "epoch", "split", "time"} <= set(r) for r in rows)
    assert {r["step"] for r in rows if r["split"] == "train"} == {*range(LOG_EVERY, card["steps"] + 1, LOG_EVERY),
                                                                   card["steps"]}
    state = weights(run)
    assert state["milestone"] == mid and state["step"] == card["steps"] and state["train_seconds"] > 0


@pytest.mark.device  # `check` runs it on the device it checks
@pytest.mark.parametrize("mid", BUILT)
def test_resume_continues_exactly(mid, full_runs, tmp_path):
    full = weights(full_runs(mid))
    n = full["step"]
    half = smoke(mid, tmp_path, "--steps", str(n // 2))
    assert weights(half)["step"] == n // 2
    # the run's own settings come from its record; --steps extends it
    train_module(mid).main(["--resume", str(half), "--steps", str(n)])
    assert_same_weights(full, weights(half))
    assert read_summary(half)["steps"] == n


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("mid", BUILT)
def test_signal_saves_the_step_reached_and_resume_finishes_the_same(mid, sig, code, full_runs, tmp_path,
                                                                     monkeypatch, capsys):
    full = weights(full_runs(mid))
    stop_at = max(1, full["step"] // 2)
    step = Session.step

    def step_with_a_signal(self, n, **kw):  # the signal arrives during step `stop_at`, as from a terminal or scheduler
        if self.step_count == stop_at - 1:
            os.kill(os.getpid(), sig)
        step(self, n, **kw)
    monkeypatch.setattr(Session, "step", step_with_a_signal)
    with pytest.raises(SystemExit) as stopped:
        smoke(mid, tmp_path)
    assert stopped.value.code == code
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(Session, "step", step)
    run = only_run_dir(tmp_path, mid)
    saved = weights(run)
    assert saved["step"] == stop_at and saved["train_seconds"] > 0
    assert not (run / "summary.json").exists()
    train_module(mid).main(["--resume", str(run)])
    assert_same_weights(full, weights(run))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the session put the handlers back


@pytest.mark.parametrize("mid", BUILT)
def test_the_final_checkpoint_is_written_once(mid, tmp_path, monkeypatch, data_root):
    import common.session
    saved_steps = []
    save = common.session.save_checkpoint
    monkeypatch.setattr(common.session, "save_checkpoint",
                        lambda path, *a, step, **kw: (saved_steps.append(step), save(path, *a, step=step, **kw))[1])
    run = smoke(mid, tmp_path)
    assert saved_steps.count(read_summary(run)["steps"]) == 1, saved_steps


# Experiments a smoke run here cannot or need not cover, and why
NOT_HERE = {("03_alexnet", "imagenet"): "needs an ImageFolder root; test_03_alexnet runs it on a generated one"}
ALWAYS_FP32 = {("01_dnn", "symmetry"), ("01_dnn", "xor")}  # the 1986 nets: 64 patterns, full batch, no autocast
ALL_EXPERIMENTS = [(m, e) for m in BUILT for e in train_module(m).EXPERIMENTS]


@pytest.mark.device  # `check` runs it on the device it checks
@pytest.mark.parametrize("mid, experiment", ALL_EXPERIMENTS, ids=[f"{m}-{e}" for m, e in ALL_EXPERIMENTS])
def test_every_experiment_smoke_runs_and_scales_its_losses(mid, experiment, tmp_path, monkeypatch, data_root):
    """Each experiment finishes its smoke preset with a contract summary, and every update it makes goes through
    the runtime's GradScaler (which fp16 needs: without loss scaling its small gradients underflow to zero)."""
    if (mid, experiment) in NOT_HERE:
        pytest.skip(NOT_HERE[mid, experiment])
    from common.device import Runtime
    scaled = []

    class CountingScaler(torch.amp.GradScaler):
        def scale(self, outputs):
            scaled.append(1)
            return super().scale(outputs)
    monkeypatch.setattr(Runtime, "grad_scaler", lambda self: CountingScaler(self.device.type, enabled=False))
    by_preset = preset_experiments(getattr(train_module(mid), "PRESETS", {}))  # a race runs by its preset (02 fast)
    argv = (["--preset", by_preset[experiment], "--steps", "6", "--log-every", "3", "--eval-every", "3"]
            if experiment in by_preset else ["--experiment", experiment, "--preset", "smoke"])
    train_module(mid).main([*argv, "--out-dir", str(tmp_path)])
    cards = [json.loads(p.read_text()) for p in (tmp_path / mid).glob("*/summary.json")]
    assert cards and all(set(SUMMARY_KEYS) <= set(c) for c in cards)
    assert all(c["world_size"] == 1 and c["device"] == DEVICE for c in cards)
    if (mid, experiment) not in ALWAYS_FP32:
        assert scaled, "the updates bypass the GradScaler"


def _user_error(mid, argv, capsys) -> str:
    """Run the train script in-process; it must exit 2 with one `error:` line and no traceback."""
    capsys.readouterr()  # what ran before (e.g. a fixture's training run) is not this call's output
    with pytest.raises(SystemExit) as e:
        train_module(mid).main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("mid", BUILT)
def test_resuming_another_milestones_run_says_whose_it_is(mid, full_runs, capsys):
    other = next(m for m in BUILT if m != mid)
    err = _user_error(mid, ["--resume", str(full_runs(other))], capsys)
    assert err.startswith("error:") and f"is a run of {other}, not {mid}" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("mid", BUILT)
def test_missing_or_truncated_checkpoint_is_one_line(mid, full_runs, tmp_path, capsys):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    err = _user_error(mid, ["--resume", str(empty)], capsys)
    assert "no checkpoint at" in err and len(err.splitlines()) == 1
    run = tmp_path / "truncated"
    run.mkdir()
    src = full_runs(mid)
    (run / "config.json").write_text((src / "config.json").read_text())
    blob = (src / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(blob[: len(blob) // 2])
    err = _user_error(mid, ["--resume", str(run)], capsys)
    assert "not a readable milestones checkpoint" in err and len(err.splitlines()) == 1


def _misapplied_flag(mid):
    """A flag of `mid` declared for some experiments, and an experiment it is not for."""
    mod = train_module(mid)
    for f in dataclasses.fields(mod.Config):
        only = f.metadata.get("only")
        other = next((e for e in mod.EXPERIMENTS if only and e not in only), None)
        if other:
            value = "true" if isinstance(f.default, bool) else str(f.default)
            return ["--experiment", other, "--" + f.name.replace("_", "-"), value], f.name, other
    return None


@pytest.mark.parametrize("mid", BUILT)
def test_a_flag_for_another_experiment_is_refused(mid, capsys, tmp_path):
    case = _misapplied_flag(mid)
    if case is None:
        pytest.skip(f"{mid} has no experiment-specific flag")
    argv, name, experiment = case
    err = _user_error(mid, [*argv, "--preset", "smoke", "--out-dir", str(tmp_path)], capsys)
    assert f"--{name.replace('_', '-')} is for --experiment" in err and f"not {experiment}" in err


@pytest.mark.parametrize("mid", BUILT)
def test_generic_mistakes_exit_2(mid, capsys, tmp_path):
    base = [*CASES[mid], "--preset", "smoke", "--out-dir", str(tmp_path)]
    assert "fp16 needs a CUDA GPU" in _user_error(mid, [*base, "--precision", "fp16", "--device", "cpu"], capsys)
    assert "does not exist" in _user_error(mid, [*base, "--data-dir", str(tmp_path / "nowhere")], capsys)
    assert "--ckpt-every must be at least 1" in _user_error(mid, [*base, "--ckpt-every", "0"], capsys)
    assert "invalid choice" in _user_error(mid, ["--experiment", "no_such_experiment"], capsys)


@pytest.mark.parametrize("mid", BUILT)
def test_experiments_come_from_one_registry_with_help(mid):
    mod = train_module(mid)
    assert mod.EXPERIMENTS and all(callable(fn) and (fn.__doc__ or "").strip() for fn in mod.EXPERIMENTS.values())
    defaults = {f.name: f for f in dataclasses.fields(mod.Config)}
    assert defaults["experiment"].default in mod.EXPERIMENTS
    assert "choices" not in defaults["experiment"].metadata  # the registry is the one list


def _imports(path: Path, module: str) -> set:
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
            found |= {target} | {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args \
                and isinstance(node.args[0], ast.Constant):
            found.add(node.args[0].value)
    return found


def test_no_import_circles():
    modules = {}
    for path in [*REPO.glob("milestones/**/*.py"), *REPO.glob("common/**/*.py")]:
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {m: {t for t in _imports(p, m) if t in modules and t != m} for m, p in modules.items()}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    circles = sorted(m for m in graph if m in reach(m) and not m.endswith(("milestones", "common")))
    assert not circles, f"modules that import themselves through others: {circles}"
