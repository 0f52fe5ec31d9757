"""common/: config and presets, the in-memory loader and its DDP sharding, checkpoints, augmentation, compare."""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from common.checkpoint import load_checkpoint, restore, save_checkpoint
from common.config import TrainConfig, arg, parse_config, parse_rates
from common.data import TensorLoader
from common.data.augment import random_crop, random_hflip
from common.data.root import check_integrity
from common.device import Runtime, check_precision, pick_device, resolve_precision, setup
from common.errors import UserError
from common.logging import RunLogger
from milestones.compare import compare
from tests.conftest import run_cli


@dataclass
class Cfg(TrainConfig):
    experiment: str = arg("a", "which", choices=("a", "b"))
    width: int = arg(8, "units")


PRESETS = {"quick": dict(epochs=3, width=16), "b/quick": dict(width=32), "smoke": dict(epochs=1)}


def test_presets_layer_under_explicit_flags():
    assert parse_config(Cfg, [], PRESETS).width == 8
    q = parse_config(Cfg, ["--preset", "quick"], PRESETS)
    assert (q.epochs, q.width, q.preset) == (3, 16, "quick")
    assert parse_config(Cfg, ["--preset", "quick", "--experiment", "b"], PRESETS).width == 32
    assert parse_config(Cfg, ["--preset", "quick", "--experiment", "b", "--width", "5"], PRESETS).width == 5
    assert parse_config(Cfg, ["--compile"], PRESETS).compile == "default"
    assert parse_config(Cfg, ["--compile", "false"], PRESETS).compile == "off"
    assert parse_config(Cfg, ["--compile", "reduce-overhead"], PRESETS).compile == "reduce-overhead"
    assert parse_config(Cfg, [], PRESETS).compile == "off"


def test_bad_values_are_user_errors_or_argparse_exits():
    with pytest.raises(UserError, match="--batch-size must be at least 1"):
        parse_config(Cfg, ["--batch-size", "0"], PRESETS)
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--preset", "nope"], PRESETS)
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--width", "wide"], PRESETS)


def test_parse_rates_takes_finite_positive_rates_only():
    assert parse_rates("0.01, 1e-3") == [0.01, 1e-3]
    for bad, message in (("0.1,x", "comma-separated list"), ("", "comma-separated list"),
                         ("0.1,0", "positive learning rates"), ("-1", "positive learning rates"),
                         ("nan", "positive learning rates"), ("inf", "positive learning rates")):
        with pytest.raises(UserError, match=message):
            parse_rates(bad)


def test_precision_and_device_checks():
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        check_precision("fp16", torch.device("cpu"))
    check_precision("bf16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            pick_device("cuda")
    assert pick_device("cpu").type == "cpu"


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    cpu = torch.device("cpu")
    for avx512_bf16, amx, expected in ((False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision("auto", cpu) == expected
        assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"  # as asked
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert setup("cpu", "auto").precision == "fp32"  # the run (and its summary) records what was used


def test_bf16_autocast_on_cpu_computes_in_bf16():
    rt = Runtime(device=torch.device("cpu"), precision="bf16")
    with rt.autocast():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    assert not rt.grad_scaler().is_enabled()


def test_loader_shards_are_disjoint_and_cover_each_global_batch():
    x = torch.arange(100)
    per_rank = [list(TensorLoader(x, batch_size=10, shuffle=True, drop_last=True, seed=3, rank=r, world_size=2))
                for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 10
    seen = torch.cat([torch.cat([b[0] for b in batches]) for batches in per_rank])
    assert sorted(seen.tolist()) == list(range(100))
    single = list(TensorLoader(x, batch_size=10, shuffle=True, drop_last=True, seed=3))
    for b, (a0, a1) in enumerate(zip(per_rank[0], per_rank[1])):  # the two halves of the same global batch
        assert sorted(torch.cat([a0[0], a1[0]]).tolist()) == sorted(single[b][0].tolist())


def test_loader_epochs_differ_and_repeat_and_resume_midway():
    loader = TensorLoader(torch.arange(50), batch_size=10, shuffle=True, drop_last=True, seed=1)
    e0 = torch.cat([b[0] for b in loader.batches(0)])
    assert not torch.equal(e0, torch.cat([b[0] for b in loader.batches(1)]))
    assert torch.equal(e0, torch.cat([b[0] for b in loader.batches(0)]))
    assert torch.equal(e0[20:], torch.cat([b[0] for b in loader.batches(0, start=2)]))


def test_eval_loader_sees_every_example_once_across_ranks():
    x = torch.arange(23)
    parts = [torch.cat([b[0] for b in TensorLoader(x, batch_size=4, rank=r, world_size=2)]) for r in range(2)]
    assert sorted(torch.cat(parts).tolist()) == list(range(23))


def test_checkpoint_roundtrip_restores_model_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "checkpoint.pt", model, opt, step=7)
    expected_next = torch.rand(3)
    state = load_checkpoint(tmp_path)  # a run directory works as well as the file
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    restore(state, other, other_opt)
    assert state["step"] == 7 and path.exists() and not list(tmp_path.glob("*.tmp"))
    assert torch.equal(other.weight, model.weight)
    assert torch.equal(other_opt.state_dict()["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])
    assert torch.equal(torch.rand(3), expected_next)  # RNG continues where the checkpoint left it


def test_checkpoints_refuse_pickled_code(tmp_path):

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": {}, "x": Evil()}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="not a readable milestones checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing-here")


def test_random_crop_and_flip_move_pixels_as_promised():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    crops = random_crop(x, 4, padding=2, generator=torch.Generator().manual_seed(0))
    assert crops.shape == x.shape
    for img, crop in zip(x, crops):  # every crop is a window of the zero-padded image
        padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
        windows = padded.unfold(1, 4, 1).unfold(2, 4, 1).reshape(-1, 4, 4)
        assert any(torch.equal(w, crop[0]) for w in windows)
    flipped = random_hflip(x, p=1.0)
    assert torch.equal(flipped, x.flip(3)) and torch.equal(random_hflip(x, p=0.0), x)


def _card(**over):
    card = dict(milestone="01_dnn", model="m", dataset="d", metric="test_error", value=0.02, paper_value=0.016,
                paper_source="s", params=1000, train_seconds=1.5, examples_per_second=100.0, device="cpu",
                precision="fp32", world_size=1, seed=0, preset="smoke", epochs=1)
    card.update(over)
    return card


def test_summary_enforces_the_contract_and_compare_reads_it(tmp_path):
    log = RunLogger("01_dnn", "m", {}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="missing contract keys"):
        log.summary(milestone="01_dnn")
    log.summary(**_card(value=float("nan")))  # NaN is written as null: the file stays valid JSON
    assert json.loads((log.dir / "summary.json").read_text())["value"] is None
    RunLogger("02_x", "n", {}, out_dir=tmp_path).summary(**_card(milestone="02_x", model="n"))
    table = compare(str(tmp_path), "table")
    assert "01_dnn" in table and "02_x" in table and "1.60%" in table  # test_error: a percentage, as training prints
    csv_rows = compare(str(tmp_path), "csv").splitlines()
    assert len(csv_rows) == 3 and csv_rows[0].startswith("milestone,what,preset,metric,value")
    assert compare(str(tmp_path), "markdown").startswith("| milestone |")


def test_compare_without_runs_is_a_clear_error(tmp_path):
    r = run_cli("compare", "--runs", tmp_path / "none")
    assert r.returncode == 2 and "no runs directory" in r.stderr and "Traceback" not in r.stderr


def test_list_shows_the_whole_course_in_order_within_100_columns():
    r = run_cli("list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    ids = [line.split()[0] for line in lines[2:]]
    assert ids == ["01_dnn", "02_cnn_lenet", "03_alexnet", "04_resnet", "05_lstm", "06_transformer",
                   "07_vae_gan_diffusion"]
    assert "1986" in r.stdout and "built" in r.stdout
    assert max(map(len, lines)) <= 100
    wide = run_cli("list", "--wide").stdout
    assert "Rumelhart, Hinton & Williams 1986, Nature 323:533" in wide and max(map(len, wide.splitlines())) > 100


def test_compare_fits_100_columns_and_skips_an_unreadable_summary_with_a_warning(tmp_path):
    long = "a-model-name-much-longer-than-any-column-should-be-allowed-to-get"
    RunLogger("01_dnn", "m", {}, out_dir=tmp_path).summary(**_card(model=long, dataset="x" * 60))
    bad = tmp_path / "02_cnn_lenet" / "broken"
    bad.mkdir(parents=True)
    (bad / "summary.json").write_text('{"milestone": "02_cnn_lenet", "val')  # cut off mid-write
    r = run_cli("compare", "--runs", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: skipping" in r.stderr and "broken" in r.stderr
    assert "01_dnn" in r.stdout and max(map(len, r.stdout.splitlines())) <= 100
    wide = run_cli("compare", tmp_path, "--wide").stdout
    assert long in wide and "examples_per_second" not in wide and "ex/s" in wide


def test_session_schedule_and_throughput_leave_out_warm_up_and_evaluation(tmp_path):
    """The session counts steps, says when log/eval/ckpt are due, and measures examples/s only over training
    steps after the first WARMUP (evaluation time between a step and the next is not training time)."""
    import time
    from common.config import TrainConfig
    from common.session import WARMUP, Session

    cfg = TrainConfig(out_dir=str(tmp_path), log_every=2, eval_every=3, ckpt_every=100)
    rt = Runtime(device=torch.device("cpu"))
    run = RunLogger("01_dnn", "m", {}, out_dir=tmp_path, rt=rt, cfg=cfg)
    sess = Session(cfg, rt, run, total=7, steps_per_epoch=5)
    sess.attach(torch.nn.Linear(2, 2))
    due = []
    with sess:
        while sess.running:
            time.sleep(0.01)  # a training step
            sess.step(10)
            due.append((sess.step_count, sess.due("log"), sess.due("eval")))
            if sess.due("eval"):
                time.sleep(0.2)  # an evaluation: must not count
                sess.log("test", error=0.5)
    assert [d for d in due if d[1]] == [(2, True, False), (4, True, False), (6, True, True), (7, True, True)]
    assert [d[0] for d in due if d[2]] == [3, 6, 7] and sess.position() == (1, 2)
    assert sess._count == 10 * (7 - WARMUP)
    assert 10 / 0.03 < sess.rate < 10 / 0.009  # ~1000 examples/s: the sleeps of evaluation left out
    assert sess.results == {"test_error": 0.5} and sess.train_seconds > 0.6


def test_a_budgeted_session_counts_budget_seconds_and_stops_at_the_step_that_spends_them(tmp_path):
    """With budget_seconds and no step total, the bar counts seconds of the budget (not a step ceiling), the loop
    runs until the spent seconds it reports reach the budget, and that step is the last: logged and evaluated."""
    import math
    from common.config import TrainConfig
    from common.session import Session

    cfg = TrainConfig(out_dir=str(tmp_path), log_every=100, eval_every=100, ckpt_every=100)
    rt = Runtime(device=torch.device("cpu"))
    run = RunLogger("01_dnn", "m", {}, out_dir=tmp_path, rt=rt, cfg=cfg)
    sess = Session(cfg, rt, run, total=None, steps_per_epoch=5, budget_seconds=1.0)
    sess.attach(torch.nn.Linear(2, 2))
    assert sess.total == math.inf and sess.meter()["total"] == 1.0 and sess.meter()["unit"] == "s"
    seen = []
    with sess:
        while sess.running:
            sess.step(10, spent=0.3 * (sess.step_count + 1))  # 0.3, 0.6, 0.9, 1.2 s spent
            meter = sess.meter()
            seen.append((sess.step_count, round(meter["done"], 6), meter["total"], sess.due("eval")))
            assert meter["eta_seconds"] is None or 0 <= meter["eta_seconds"] < math.inf
    assert seen == [(1, 0.3, 1.0, False), (2, 0.6, 1.0, False), (3, 0.9, 1.0, False), (4, 1.0, 1.0, True)]
    assert sess.total == 4 and sess.spent == 1.2 and "100%" in sess.meter()["text"]
    capped = Session(cfg, rt, run, total=2, steps_per_epoch=5, budget_seconds=1.0)  # a step total still caps it
    capped.attach(torch.nn.Linear(2, 2))
    with capped:
        while capped.running:
            capped.step(10, spent=0.1)
    assert capped.step_count == 2 and capped.meter()["done"] == 0.1
    with pytest.raises(TypeError):  # a budgeted loop that forgets to report its seconds would never stop
        Session(cfg, rt, run, total=None, steps_per_epoch=5, budget_seconds=1.0).step(10)
    with pytest.raises(UserError):
        Session(cfg, rt, run, total=None, steps_per_epoch=5)


def test_mfu_uses_the_datasheet_peak_and_is_none_off_gpu():
    from common.device import mfu

    class FakeA100(Runtime):
        device_name = "NVIDIA A100-SXM4-80GB"

    rt = FakeA100(device=torch.device("cuda"), precision="bf16")
    assert mfu(6e9, 10_000, rt) == pytest.approx(6e13 / 312e12)
    assert mfu(6e9, 10_000, FakeA100(device=torch.device("cuda"), precision="fp32")) == pytest.approx(6e13 / 156e12)
    assert mfu(6e9, 10_000, Runtime(device=torch.device("cpu"))) is None


def test_threads_zero_restores_torchs_default_after_a_run_that_set_one():
    """In one process (tests, notebooks) a run with --threads 0 must not inherit an earlier run's --threads 1: a
    different thread count sums the same GEMMs in another order, and a resumed run would then differ."""
    from common.device import TORCH_DEFAULT_THREADS
    before = torch.get_num_threads()
    try:
        with setup("cpu", threads=1):
            assert torch.get_num_threads() == 1
        with setup("cpu", threads=0):
            assert torch.get_num_threads() == TORCH_DEFAULT_THREADS
    finally:
        torch.set_num_threads(before)


def test_setup_keeps_freed_memory_on_glibc():
    """glibc takes both mallopt settings (the call says so); elsewhere the call is a no-op that says False."""
    import platform
    from common.device import keep_freed_memory
    assert keep_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_one_cycle_rises_from_a_25th_to_the_peak_then_falls_to_zero():
    from common.loop import one_cycle
    f = one_cycle(100)
    assert f(0) == pytest.approx(1 / 25) and f(25) == pytest.approx(1.0) and f(100) == pytest.approx(0.0)
    rising, falling = [f(s) for s in range(26)], [f(s) for s in range(25, 101)]
    assert rising == sorted(rising) and falling == sorted(falling, reverse=True)
    assert f(25 + 75 // 2) == pytest.approx(0.5, abs=0.03)  # cosine: half way down at the middle of the fall



def test_data_already_on_disk_is_read_without_importing_torchvision(data_root, tmp_path):
    """torchvision's download code is imported only to download: importing it costs over a second of a quick
    run. Run in a fresh interpreter, since other tests import torchvision."""
    code = ("import sys; from common import data; d = data.load('tinyshakespeare', sys.argv[1]); "
            "print(len(d['vocab']), 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(data_root)], capture_output=True, text=True,
                         env={**os.environ, "MILESTONES_CACHE": str(tmp_path)}, check=True)
    assert out.stdout.split() == ["65", "False"]


def test_check_integrity_compares_the_md5(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"milestones" * 300_000)  # three blocks of the reader
    good = hashlib.md5(path.read_bytes()).hexdigest()
    assert check_integrity(path, good) and check_integrity(path, None)
    assert not check_integrity(path, "0" * 32) and not check_integrity(tmp_path / "missing", good)


@pytest.mark.parametrize("argv, says", [
    (["train", "06_transformer", "--preset", "quik"], "invalid choice: 'quik'"),
    (["train", "01_dnn", "--learning-rate", "0.1"], "did you mean --lr?"),
    (["train", "04_resnet", "--epoch", "3"], "did you mean --epochs?"),  # an abbreviation is refused, not taken
    (["compare", "--formt", "csv"], "did you mean --format?"),
    (["trian", "01"], "did you mean train?"),
])
def test_a_command_line_mistake_is_one_line_on_stderr_and_exit_2(argv, says):
    r = run_cli(*argv)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and says in r.stderr, r.stderr


def test_help_still_shows_every_flag():
    r = run_cli("train", "01_dnn", "--help")
    assert r.returncode == 0 and "--batch-size" in r.stdout and "--preset" in r.stdout


def test_deterministic_switch_turns_deterministic_kernels_on_and_autotuning_off():
    try:
        with setup("cpu", deterministic=True):
            assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        with setup("cpu"):  # the next run in the process starts from the defaults again
            assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(False)


def test_normalize_builds_its_channel_statistics_once_per_device(monkeypatch):
    """A training step must not copy mean/std from the host each call (on a GPU: a blocking copy every step)."""
    from common.data import augment

    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    want = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(augment.normalize(x, mean, std), want)
    made = []
    monkeypatch.setattr(augment.torch, "tensor", lambda *a, **k: made.append(1))
    for _ in range(3):
        assert torch.allclose(augment.normalize(x, mean, std), want)
    assert not made  # the cached statistics served every later call
