"""The CLI views: `bench` (speed of each milestone's main model), `compare --plot` (learning curves) and
`compare --history` (the papers' parameters and compute by year). Behaviour only, never speed."""

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from common.errors import UserError
from milestones import bench, history
from milestones.__main__ import main
from milestones.curves import curves

from .conftest import run_cli

PNG = b"\x89PNG\r\n\x1a\n"
CONTRACT = ["milestone", "model", "params", "MACs/example", "precision", "examples/s", "tokens/s",
            "achieved GFLOP/s", "% of peak"]


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG, f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes"


# ---- bench ---------------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def measured():
    """01 and 04 timed for 2 steps in fp32 (their real models on synthetic batches of 8)."""
    return bench.bench(["01", "resnet"], ("fp32",), steps=2, batch_size=8, device="cpu")


def test_bench_table_has_the_contract_columns_and_positive_numbers(measured):
    rows, peaks = measured
    assert [(r["milestone"], r["model"]) for r in rows] == [("01_dnn", "MLP 784-800-10"), ("04_resnet", "ResNet-20")]
    mlp, resnet = rows
    assert mlp["params"] == 784 * 800 + 800 + 800 * 10 + 10
    assert mlp["macs_per_example"] == 784 * 800 + 800 * 10  # one multiply-add per weight
    assert resnet["params"] == 269_722  # the paper's 0.27M
    assert resnet["macs_per_example"] == 40_551_040  # 04's count_multiply_adds: conv and fc layers
    for r in rows:
        for key in ("examples_per_second", "achieved_flops", "peak_fraction"):
            assert r[key] > 0, (r["model"], key)
        assert r["achieved_flops"] == pytest.approx(6 * r["macs_per_example"] * r["examples_per_second"])
        assert r["tokens_per_second"] is None  # image models have no tokens
    peak, source = peaks["fp32"]
    assert peak > 0 and "measured" in source  # a CPU has no datasheet peak here
    table = bench.format_bench(rows, peaks, "table", "cpu").splitlines()
    header = table[0]
    positions = [header.index(c) for c in CONTRACT]
    assert positions == sorted(positions), "columns out of the contract's order"
    assert any(line.startswith("01_dnn") for line in table) and any(line.startswith("04_resnet") for line in table)
    assert any("measured" in line and "fp32" in line for line in table), "the peak's source is not said"
    markdown = bench.format_bench(rows, peaks, "markdown", "cpu").splitlines()
    assert markdown[0].startswith("| milestone | model |") and markdown[1].startswith("|---|")


def test_bench_language_model_reports_tokens(monkeypatch):
    """A language model's tokens/s is its sequences/s times the tokens of a sequence (05's bptt 20)."""
    case = bench.cases_05()[0]
    case.macs = bench.count_macs(case)
    # the LSTM's fused kernel is counted on its step-by-step twin: 2 layers x 4 gates x (200 + 200) x 200 per token,
    # plus the 200 x 10,000 decoder
    assert case.macs == 20 * (2 * 4 * 400 * 200 + 200 * 10_000)
    assert case.tokens == 20


def test_bench_subcommand_csv(capsys):
    main(["bench", "01", "--steps", "1", "--batch-size", "8", "--precision", "fp32", "--format", "csv",
          "--device", "cpu"])
    out = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert len(rows) == 1 and rows[0]["milestone"] == "01_dnn" and rows[0]["precision"] == "fp32"
    assert out.err.count("bench: 01_dnn") == 1 and "examples/s" in out.err  # a progress line per model
    assert rows[0]["batch"] == "8" and rows[0]["tokens_per_second"] == ""
    assert float(rows[0]["examples_per_second"]) > 0 and float(rows[0]["peak_flops"]) > 0


def test_bench_skips_what_cannot_be_built(monkeypatch, capsys):
    monkeypatch.setattr(bench, "is_built", lambda mid: mid != "03_alexnet")

    def half_built():
        raise ModuleNotFoundError("No module named 'milestones.02_cnn_lenet.model'")
    monkeypatch.setitem(bench.CASES, "02_cnn_lenet", half_built)
    cases = bench.build_cases(["01_dnn", "02_cnn_lenet", "03_alexnet"])
    assert [c.milestone for c in cases] == ["01_dnn"]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: skipping 02_cnn_lenet: ModuleNotFoundError")
    assert warnings[1] == "warning: skipping 03_alexnet: not built yet (no train.py)"


def test_bench_defaults_to_auto_precision_and_its_probe_never_hangs(monkeypatch):
    """auto: bf16 only where the hardware has it, so an AVX2 CPU is not made to emulate it; and where a precision
    is slow, the peak probe shrinks its matmuls instead of running 2048x2048 products for minutes."""
    from milestones.__main__ import main as cli

    seen = {}
    monkeypatch.setattr(bench, "main", lambda args: seen.update(precision=args.precision))
    cli(["bench", "01"])
    assert seen["precision"] == "auto"
    cpu = torch.device("cpu")
    assert bench.probe_size(cpu, "fp32", n=2048, seconds=0.0) == 256  # any time is too long: the smallest
    assert bench.probe_size(cpu, "fp32", n=512, seconds=1e9) == 512  # all the time in the world: the full size


def test_bench_bad_input():
    with pytest.raises(UserError, match="unknown milestone 'nope'"):
        bench.resolve(["nope"])
    assert bench.resolve(["resnet", "01", "04_resnet"]) == ["01_dnn", "04_resnet"]  # course order, once each
    with pytest.raises(UserError, match="--steps"):
        bench.bench(["01"], ("fp32",), steps=0, device="cpu")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        bench.bench(["01"], ("fp16",), steps=1, device="cpu")


# ---- compare --plot ------------------------------------------------------------------------------------

def write_run(root: Path, milestone: str, model: str, stamp: str, rows: list[dict], summary: dict = None,
              config: dict = None) -> Path:
    run = root / milestone / f"{stamp}-{model}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(dict(milestone=milestone, model=model, config=config or {})))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(dict(milestone=milestone, model=model, **summary)))
    return run


@pytest.fixture
def runs(tmp_path) -> Path:
    """Two fake runs: a one-net run with train and test rows, and a two-net run tagged by model (resumed once:
    its clock restarts)."""
    root = tmp_path / "runs"
    mlp = [dict(step=s, epoch=s / 100, split="train", loss=2.0 / s, time=0.5 * s) for s in range(1, 41)]
    mlp += [dict(step=s, epoch=s / 100, split="test", loss=2.5 / s, error=0.5 / s, time=0.5 * s + 0.1)
            for s in (10, 20, 30, 40)]
    write_run(root, "01_dnn", "mlp-784-800-10", "20260101-000000", mlp)
    deg = []
    for net in ("plain20", "resnet20"):
        deg += [dict(step=s, epoch=s / 50, split="train", loss=1.0 + 1 / s, error=0.9 - s / 100, model=net,
                     time=float(s if s <= 20 else s - 20)) for s in range(1, 41)]  # resumed at step 21
    write_run(root, "04_resnet", "degradation", "20260101-000100", deg)
    return root


def test_plot_writes_a_png_of_every_run(runs):
    r = run_cli("compare", "--plot", "loss", "--runs", runs, timeout=300)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path == runs / "compare-loss.png"
    assert_png(path)


def test_plot_lines_per_run_tag_and_split(runs):
    lines = curves(str(runs), "loss")
    assert sorted(lines) == ["01_dnn/mlp-784-800-10 test", "01_dnn/mlp-784-800-10 train",
                             "04_resnet/degradation [plain20]", "04_resnet/degradation [resnet20]"]
    xs, ys = lines["01_dnn/mlp-784-800-10 test"]
    assert xs == [10, 20, 30, 40] and ys == pytest.approx([0.25, 0.125, 2.5 / 30, 0.0625])
    only_test = curves(str(runs), "test:error")
    assert list(only_test) == ["01_dnn/mlp-784-800-10"]  # one split asked for: no split in the label
    assert sorted(curves(str(runs), "error", filters=["04_resnet"])) == ["04_resnet/degradation [plain20]",
                                                                         "04_resnet/degradation [resnet20]"]
    by_time = curves(str(runs), "error", x="time", filters=["resnet20"])  # one net of the run, by its tag
    assert list(by_time) == ["04_resnet/degradation [resnet20]"]
    t, _ = by_time["04_resnet/degradation [resnet20]"]
    assert t == sorted(t) and len(t) == 40 and t[-1] == 40.0  # the resumed clock is continued, not restarted
    by_epoch = curves(str(runs), "loss", x="epoch", filters=["01_dnn"])
    assert by_epoch["01_dnn/mlp-784-800-10 train"][0][:2] == [0.01, 0.02]


def test_plot_errors(runs, tmp_path):
    r = run_cli("compare", "--plot", "loss", "--runs", runs, "--filter", "alexnet", timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: no run under {runs} matches --filter alexnet (2 runs there)"
    with pytest.raises(UserError, match=r"no chosen run logs 'valid:loss' against step; they log: .*test:loss"):
        curves(str(runs), "valid:loss")
    with pytest.raises(UserError, match="no runs directory"):
        curves(str(tmp_path / "nowhere"), "loss")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no metrics.jsonl"):
        curves(str(tmp_path / "empty"), "loss")
    for argv, message in ((["--x", "time"], "go with --plot"), (["--plot", "loss", "--history"], "give one"),
                          (["--history", "--filter", "x"], "not --history")):
        with pytest.raises(SystemExit) as e:
            main(["compare", "--runs", str(runs), *argv])
        assert e.value.code == 2, argv


# ---- compare --history ---------------------------------------------------------------------------------

def test_history_png_and_numbers(tmp_path, capsys):
    root = tmp_path / "runs"
    card = dict(params=269_722, steps=100, dataset="CIFAR-10", metric="test_error", value=0.3)
    write_run(root, "04_resnet", "resnet20", "20260101-000000", [], summary=card, config=dict(batch_size=128))
    points = history.paper_points()
    assert_png(history.draw_history(str(root), tmp_path / "history.png", points))
    papers = {p["label"]: p for p in points}
    assert papers["AlexNet"]["params"] == 60_965_224
    assert papers["ResNet-152"]["params"] == 60_192_808 and round(papers["ResNet-152"]["macs"] / 1e9, 1) == 11.3
    assert papers["ResNet-20 (CIFAR)"]["params"] == 269_722
    assert round(papers["DDPM U-Net (CIFAR-10)"]["params"] / 1e6, 1) == 35.7
    assert papers["LeNet-5"]["params"] == 60_000
    assert papers["AlexNet"]["flops"] == pytest.approx(6 * papers["AlexNet"]["macs"] * 90 * 1.2e6)
    ours = history.run_points(str(root), list(papers.values()))
    assert ours == [dict(label="resnet20", year=2015.4, params=269_722, flops=6 * 40_551_040 * 100 * 128)]


def test_help_mentions_the_flags(capsys):
    for argv, flags in ((["bench", "--help"], ("--precision", "--steps", "--batch-size", "--format", "--device", "--threads")),
                        (["compare", "--help"], ("--plot", "--x", "--runs", "--filter", "--out", "--history"))):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        text = capsys.readouterr().out
        for flag in flags:
            assert flag in text, (argv, flag)
