"""`python -m milestones check`: the whole check at smoke size on the CPU, and the judgement of one line."""

import json
import os
import subprocess
import sys

import pytest
import torch

from common import session
from milestones.check import STAGES, Line, Stage, Watch, judge, run_check
from tests.conftest import REPO


def test_check_on_the_cpu_trains_every_milestone_and_writes_its_report(data_root, tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, MILESTONES_DATA=str(data_root))
    r = subprocess.run([sys.executable, "-m", "milestones", "check", "--device", "cpu", "--tests", "off",
                        "--threads", "1", "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["device"] == "cpu" and report["preset"] == "smoke" and report["compile"] == "off"
    lines = {x["stage"]: x for x in report["lines"]}
    assert lines["environment"]["values"]["peak_fp32_tflops"] > 0
    trained = [x for x in report["lines"] if x["stage"] != "environment"]
    assert {x["stage"][:2] for x in trained} == {"01", "02", "03", "04", "05", "06", "07"}
    for x in trained:
        v = x["values"]
        assert x["status"] == "pass", x
        assert v["steps"] == report["steps"] and v["preset"] == "smoke"
        assert v["per_second"] > 0 and v["flops_per_step"] > 0 and 0 < v["mfu"]
        assert v["graphs_after_warmup"] == 0 and v["syncs_per_step"] is None  # syncs are counted on CUDA only
    md = (out / "report.md").read_text()
    assert all(x["stage"] in md for x in trained) and "| stage | status |" in md
    assert "every line passed" in r.stdout


def _run_dir(tmp_path, losses, key="loss"):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(dict(preset="default", precision="bf16", steps=len(losses),
                                                      examples_per_second=1000.0)))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "split": "train", key: v}) + "\n"
                                               for i, v in enumerate(losses)))
    return run


def _watch(syncs_each_step=0, graphs_each_step=0, steps=12, warmup=3):
    w = Watch(warmup, syncs=[])
    w.flops, w.per_step = 6e9, 100
    w.sync_counts = [syncs_each_step * k for k in range(steps)]
    w.graphs = [1 + graphs_each_step * k for k in range(steps)]
    return w


@pytest.mark.parametrize("losses, syncs, graphs, must_fall, problem", [
    ([2.0, 1.5, 1.0], 0, 0, True, None),
    ([2.0, 2.1, 2.2], 0, 0, True, "loss did not fall"),
    ([2.0, 2.1, 2.2], 0, 0, False, None),  # a GAN's losses need not fall
    ([2.0, 1.5, 1.0], 2, 0, True, "2 host syncs per step"),
    ([2.0, 1.5, 1.0], 0, 1, True, "graphs compiled after warm-up"),
])
def test_a_line_fails_on_a_loss_that_does_not_fall_a_host_sync_or_a_recompile(tmp_path, losses, syncs, graphs,
                                                                              must_fall, problem):
    stage = Stage("04_resnet", "ResNet-20", (), "CIFAR-10", must_fall=must_fall)
    line = judge(Line("04 ResNet-20"), stage, _watch(syncs, graphs), _run_dir(tmp_path, losses), 1.0, cuda=True,
                 peak=lambda precision: 1e12, memory=3 * 2 ** 20)
    assert line.status == ("pass" if problem is None else "fail")
    assert (problem or "") in line.note
    v = line.values
    assert v["loss_first"] == losses[0] and v["loss_last"] == losses[-1] and v["peak_memory_mib"] == 3
    assert v["mfu"] == pytest.approx(6e9 * 1000 / 100 / 1e12)  # FLOPs a step x steps a second / peak


def test_the_median_step_counts_syncs_so_log_points_are_allowed():
    w = Watch(warmup=2, syncs=[])
    w.sync_counts = [0, 0, 0, 0, 3, 3, 3, 6, 6]  # two steps that logged (3 syncs each), the others none
    assert w.syncs_per_step() == 0


def test_a_missing_dataset_skips_its_line_and_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MILESTONES_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    lines, meta, out = run_check("cpu", steps=8, tests=False, only=("01",), threads=1,
                                 data_dir=tmp_path / "empty", out=tmp_path / "c", progress=lambda s: None)
    assert [x.status for x in lines] == ["pass", "skip"]
    assert "MNIST" in lines[1].note and (out / "report.md").is_file()
    assert session.STEP_WATCHERS == []  # the watcher is gone once its stage is done


def test_every_milestone_has_a_stage():
    from milestones import COURSE
    assert {s.milestone for s in STAGES} == set(COURSE)


def test_ctrl_c_stops_the_whole_check_not_just_one_stage(tmp_path, monkeypatch):
    """A train script turns Ctrl-C into exit status 130; the check must stop there, not go on to the next stage."""
    import milestones.check as check

    def interrupted(*args, **kwargs):
        raise SystemExit(130)
    monkeypatch.setattr(check, "train_module", lambda milestone: type("T", (), {"main": interrupted}))
    with pytest.raises(SystemExit) as e:
        run_check("cpu", steps=8, tests=False, only=("01",), threads=1, out=tmp_path / "c", progress=lambda s: None)
    assert e.value.code == 130


def test_the_pack_holds_every_dataset_under_64_mib_and_the_loaders_read_it(data_root, tmp_path, monkeypatch):
    from common.data.cifar import load_cifar10
    from milestones.check import CIFAR_PER_FILE, pack

    monkeypatch.setenv("MILESTONES_CACHE", str(tmp_path / "cache"))  # a decoded pack, never the real set's cache
    out = pack(tmp_path / "pack", data_root)
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 64 * 2 ** 20  # what the device tool carries
    cifar = load_cifar10(out, download=False)
    assert cifar["train"][0].shape == (5 * CIFAR_PER_FILE, 3, 32, 32) and len(cifar["test"][1]) == CIFAR_PER_FILE
    real = load_cifar10(data_root, download=False)
    assert torch.equal(cifar["test"][0], real["test"][0][:CIFAR_PER_FILE])  # the first images, as they are
