"""The numbers we publish: run records that name their machine, `compare` as the generator of our tables (one
row per arm, percentages, the preset, nothing key cut), and README.md / NOTES.md tables equal to the output of the
commands they name, over the committed records in results/."""

import json
from pathlib import Path

import pytest
import torch

from common.errors import UserError
from common.logging import RunLogger
from common.machine import cpu_class, machine, machine_class
from milestones import COURSE
from milestones.arms import rows
from milestones.compare import compare
from milestones.generated import BLOCK, blocks, regenerate, stale
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
MARKDOWN = [REPO / "README.md", *sorted((REPO / "milestones").glob("*/NOTES.md"))]


def card(**over):
    c = dict(milestone="02_cnn_lenet", model="lenet5", dataset="MNIST", metric="test_error", value=0.0098,
             paper_value=0.0095, paper_source="s", params=60000, train_seconds=230.0, examples_per_second=900.0,
             device="cpu", precision="fp32", world_size=1, seed=0, preset="quick", epochs=20)
    c.update(over)
    return c


def record(root, c, experiment="train", cls="AVX2 CPU", argv=("--preset", "quick")):
    """A run directory as a train script leaves it: summary.json and config.json (with its machine)."""
    d = Path(root) / c["milestone"] / f"{c['model']}-{c['seed']}-{experiment}-{cls.split()[0]}"
    d.mkdir(parents=True, exist_ok=True)
    m = dict(cpu="x", cpu_class=cls.split()[0], cores=2, threads=1, gpu=None, gpu_count=0, torch="2",
             load_start=[0.5, 0.4, 0.3], load_end=[1.5, 1, 1], **{"class": cls})
    (d / "summary.json").write_text(json.dumps({**c, "machine": m}))
    (d / "config.json").write_text(json.dumps(dict(milestone=c["milestone"], model=c["model"], machine=m,
                                                   config=dict(experiment=experiment), argv=list(argv))))
    return d


# ---- what a record says about its machine ---------------------------------------------------------------------

@pytest.mark.parametrize("flags, cls", [({"avx2", "avx512f", "avx512_bf16", "amx_tile"}, "AMX"),
                                        ({"avx2", "avx512f", "avx512_bf16"}, "AVX512-BF16"),
                                        ({"avx2", "avx512f"}, "AVX512"), ({"avx2", "fma"}, "AVX2"),
                                        ({"sse2"}, "other")])
def test_cpu_class_is_the_instruction_set_that_decides_bf16(flags, cls):
    assert cpu_class(flags) == cls


def test_machine_class_names_the_gpu_where_one_trained():
    assert machine_class(dict(cpu_class="AVX2", gpu=None)) == "AVX2 CPU"
    assert machine_class(dict(cpu_class="AMX", gpu="NVIDIA H100", gpu_count=1)) == "NVIDIA H100"
    assert machine_class(dict(cpu_class="AMX", gpu="NVIDIA H100", gpu_count=8)) == "8x NVIDIA H100"


def test_an_isa_cap_in_the_environment_is_recorded_as_an_emulated_avx2_cpu_and_turns_auto_to_fp32(monkeypatch):
    import common.machine as cm
    from common.device import resolve_precision
    monkeypatch.setattr(cm, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    m = cm.machine()
    assert m["cpu_class"] == "AVX512-BF16" and "cpu_hw_class" not in m and m["class"] == "AVX512-BF16 CPU"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    m = cm.machine()
    assert (m["cpu_class"], m["cpu_hw_class"], m["class"]) == ("AVX2", "AVX512-BF16", "AVX2 CPU (emulated)")
    assert m["isa_limit"] == "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # an AVX2 laptop has no native bf16


def test_every_run_record_names_its_machine_and_the_load_at_start_and_end(tmp_path):
    log = RunLogger("02_cnn_lenet", "lenet5", {}, out_dir=tmp_path)
    written = log.summary(**card())
    config = json.loads((log.dir / "config.json").read_text())
    summary = json.loads((log.dir / "summary.json").read_text())
    here = machine()
    for m in (config["machine"], summary["machine"], written["machine"]):
        assert m["cpu_class"] == here["cpu_class"] and m["cores"] == here["cores"] and m["torch"] == here["torch"]
        assert m["class"] == machine_class(m) and len(m["load_start"]) == 3
    assert len(summary["machine"]["load_end"]) == 3 and "load_end" not in config["machine"]
    assert 0 < summary["cpu_seconds"] and summary["wall_seconds"] > 0  # CPU seconds: a time that load does not inflate


# ---- compare: one row per arm ------------------------------------------------------------------------------

ARMED = {  # experiment -> (a card as that experiment writes it, the arms and their values)
    "adding": (dict(milestone="05_lstm", model="adding-lstm-2", metric="test_error at T=100", value=0.007,
                    results=[dict(model=k, T=T, error=e, params=p, seconds=10.0)
                             for T in (50, 100) for k, e, p in (("rnn", 0.855, 100), ("lstm", 0.007, 400),
                                                                ("lstm1997", 0.006, 300))]),
               {"rnn": 0.855, "lstm": 0.007, "lstm1997": 0.006}),
    "degradation": (dict(milestone="04_resnet", model="degradation:plain20,plain56", metric="training error, x",
                         train_error=dict(plain20=0.45, plain56=0.69, resnet20=0.38, resnet56=0.35)),
                    dict(plain20=0.45, plain56=0.69, resnet20=0.38, resnet56=0.35)),
    "ablations": (dict(milestone="06_transformer", model="ablations:base,one-head", metric="dev BLEU of base",
                       arms=["base", "one-head", "post-ln-no-warmup"], bleu_base=23.3, bleu_one_head=0.0,
                       **{"bleu_one-head": 17.0, "bleu_post-ln-no-warmup": 0.02,
                          "diverged_post-ln-no-warmup": True}),
                  {"base": 23.3, "one-head": 17.0, "post-ln-no-warmup": None}),
    "vs_rnn": (dict(milestone="06_transformer", model="vs_rnn:transformer,rnn", metric="BLEU, T minus R",
                    bleu_transformer=22.2, bleu_rnn=27.4), dict(transformer=22.2, rnn=27.4)),
    "vs_lstm": (dict(milestone="06_transformer", model="vs_lstm:gpt,lstm", metric="val_loss of the GPT",
                     gpt_val_loss=1.611, lstm_val_loss=1.533), dict(gpt=1.611, lstm=1.533)),
    "gan_loss": (dict(milestone="07_vae_gan_diffusion", model="gan-minimax-vs-nonsaturating",
                      metric="classifier_fid (nonsaturating)", arms=dict(minimax=dict(fcd=611.0, params=5),
                                                                         nonsaturating=dict(fcd=175.0, params=5))),
                 dict(minimax=611.0, nonsaturating=175.0)),
    "relu_vs_tanh": (dict(milestone="03_alexnet", model="relu-vs-tanh", metric="epochs_to_25%_train_error (t / r)",
                          relu=dict(epochs=3, lr=0.01), tanh=dict(epochs=2, lr=0.01)), dict(relu=3, tanh=2)),
}


@pytest.mark.parametrize("experiment", sorted(ARMED))
def test_a_multi_arm_card_is_one_row_per_arm_each_naming_its_experiment(experiment):
    c, want = ARMED[experiment]
    got = rows(card(**{**c, "experiment": experiment}))
    assert {r["arm"]: r["value"] for r in got} == want
    assert all(r["experiment"] == experiment and r["milestone"] == c["milestone"] for r in got)


def test_03_ablations_arms_are_rows_too():
    c = card(milestone="03_alexnet", experiment="ablations", arms={"full design": dict(test_error=0.52, params=9),
                                                                  "no LRN": dict(test_error=0.51, params=9)})
    assert {r["arm"]: r["value"] for r in rows(c)} == {"full design": 0.52, "no LRN": 0.51}
    assert rows(card()) == [card()]  # one net: the card itself


def test_compare_prints_every_arm_errors_as_percentages_and_the_preset(tmp_path):
    c, _ = ARMED["adding"]
    record(tmp_path, card(**c), "adding")
    record(tmp_path, card())
    table = compare(str(tmp_path))
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["milestone", "experiment:", "model", "preset", "metric"]
    assert "adding: rnn" in table and "adding: lstm1997" in table and "85.50%" in table and "0.60%" in table
    assert "0.98%" in table and "0.95%" in table and "quick" in table  # LeNet-5: ours and the paper's, as percents
    assert [line.split()[0] for line in lines[2:]] == ["02_cnn_lenet", "05_lstm", "05_lstm", "05_lstm"]  # course order


def test_compare_never_cuts_a_milestone_or_metric_to_fit_100_columns(tmp_path):
    metric = "sweeps_to_solve (median)"
    record(tmp_path, card(milestone="07_vae_gan_diffusion", model="m" * 60, metric=metric, dataset="d" * 80))
    out = compare(str(tmp_path))
    assert "07_vae_gan_diffusion" in out and metric in out and max(map(len, out.splitlines())) <= 100, out
    assert "m" * 60 in compare(str(tmp_path), "markdown")  # a browser wraps markdown: nothing is cut there


def test_compare_groups_by_machine_class_and_filters_one(tmp_path):
    record(tmp_path, card(seed=0), cls="AVX2 CPU")
    record(tmp_path, card(seed=1, value=0.02), cls="AMX CPU")
    both = compare(str(tmp_path))
    assert "On AVX2 CPU:" in both and "On AMX CPU:" in both
    only = compare(str(tmp_path), machine="avx2")
    assert "0.98%" in only and "2.00%" not in only and "On " not in only
    with pytest.raises(UserError, match="ran on: AMX CPU, AVX2 CPU"):
        compare(str(tmp_path), machine="H100")


def test_compare_seeds_shows_the_spread_not_one_seed(tmp_path):
    for seed, v in ((0, 0.0084), (1, 0.0097), (2, 0.0112)):
        record(tmp_path, card(seed=seed, value=v, train_seconds=200.0 + seed))
    out = compare(str(tmp_path), seeds=True)
    assert "0.98% (0.84-1.12, 3 seeds)" in out and len(out.splitlines()) == 3
    assert len(compare(str(tmp_path)).splitlines()) == 5  # without --seeds: one row per run


def test_compare_columns_put_one_yardstick_beside_every_run(tmp_path):
    for model, fcd in (("vae", 56.3), ("dcgan", 7.25)):
        record(tmp_path, card(milestone="07_vae_gan_diffusion", model=model, fcd=fcd, metric="classifier_fid"))
    record(tmp_path, card())
    table = compare(str(tmp_path), columns=["fcd"], filters=["07_vae"]).splitlines()
    at = table[0].split().index("fcd")
    assert sorted(r.split()[at] for r in table[2:]) == ["56.3", "7.25"] and len(table) == 4
    with pytest.raises(UserError, match="no run here records nats"):
        compare(str(tmp_path), columns=["nats"])
    shown = compare(str(tmp_path), show=["milestone", "command", "value"], filters=["02_"]).splitlines()
    assert shown[2].split() == ["02_cnn_lenet", "02_cnn_lenet", "--preset", "quick", "0.98%"]


# ---- generated tables ------------------------------------------------------------------------------------------

def test_a_generated_table_is_its_command_output_and_a_stale_one_is_found(tmp_path):
    record(tmp_path / "res", card())
    doc = tmp_path / "DOC.md"
    doc.write_text(f"words\n<!-- compare {tmp_path / 'res'} --format markdown -->\nold\n<!-- /compare -->\nmore\n")
    assert stale(doc) == [f"{tmp_path / 'res'} --format markdown"]
    r = run_cli("compare", "--update", doc)
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert stale(doc) == [] and "| 02_cnn_lenet | train: lenet5 | quick | test_error | 0.98% |" in text
    assert text.startswith("words\n") and text.endswith("<!-- /compare -->\nmore\n")
    assert regenerate(text) == text


def test_a_record_of_a_preset_resized_since_shows_the_flags_that_run_its_recipe_today():
    """A preset re-sized after a record was made (04's quick: 2,400 steps of the paper's schedule, now 600 of
    one-cycle) would make the record's command run another recipe; the command shown adds the flags that run
    the recorded one, and a record of today's recipe gets none."""
    from milestones import resolve_config
    from milestones.compare import command_of

    argv = ["--preset", "quick", "--out-dir", "runs/x"]
    today = dict(vars(resolve_config("04_resnet", argv)), compile=False)  # older records wrote False for off
    assert command_of(dict(milestone="04_resnet", argv=argv, config=today)) == "train 04_resnet --preset quick"
    old = dict(today, steps=2400, lr=0.1, schedule="paper", nesterov=False, weight_decay=1e-4, eval_every=600)
    shown = command_of(dict(milestone="04_resnet", argv=argv, config=old))
    assert shown == ("train 04_resnet --preset quick --steps 2400 --lr 0.1 --eval-every 600 --weight-decay 0.0001 "
                     "--schedule paper --nesterov false")
    resolved = resolve_config("04_resnet", shown.split()[2:])
    assert all(getattr(resolved, k) == v for k, v in old.items() if k not in ("compile", "out_dir"))


def test_compare_course_shows_each_chapters_run_it_command_with_its_seeds_merged(tmp_path):
    for seed, v in ((0, 0.0084), (1, 0.0112)):
        record(tmp_path, card(seed=seed, value=v), argv=("--preset", "quick", "--threads", "1", "--seed", str(seed)))
    record(tmp_path, card(model="mlp", seed=5, value=0.02), "mlp", argv=("--experiment", "mlp", "--preset", "quick"))
    out = compare(str(tmp_path), course=True).splitlines()
    assert out[0].split()[:3] == ["train", "command", "metric"] and len(out) == 3
    assert out[2].split()[:3] == ["02_cnn_lenet", "--preset", "quick"] and "0.98% (0.84-1.12, 2 seeds)" in out[2]


def test_results_holds_records_not_checkpoints_and_stays_lean():
    estimates = [p for p in (RESULTS / "estimates").rglob("*") if p.is_file()]  # the GPU estimates' record
    assert all(p.suffix == ".json" for p in estimates)
    files = [p for p in RESULTS.rglob("*") if p.is_file() and p not in estimates]
    assert files, "results/ holds the records behind every published number"
    assert {p.name for p in files} <= {"summary.json", "config.json", "metrics.jsonl"}
    assert all(p.parent.parent.name in COURSE for p in files)  # results/<milestone>/<run>/
    assert sum(p.stat().st_size for p in files) < 8 * 2**20
    for summary in RESULTS.rglob("summary.json"):
        assert (summary.parent / "config.json").is_file(), summary
        assert json.loads(summary.read_text())["machine"]["class"], summary


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_published_tables_equal_their_commands_output(path):
    """A number in README.md or a NOTES.md table can only change through a run record in results/."""
    assert stale(path, REPO) == [], f"run: python -m milestones compare --update {path.relative_to(REPO)}"
def test_readme_names_its_generating_commands_and_reads_in_two_minutes():
    text = (REPO / "README.md").read_text()
    assert any(args.startswith("results/") for args, _ in blocks(text))
    lines = text.splitlines()
    prose = BLOCK.sub("", text).splitlines()  # a generated table's rows may pass 100 columns (its cells are uncut)
    assert len(lines) < 160 and max(map(len, prose)) <= 100


def test_compare_exclude_leaves_out_what_it_names(tmp_path):
    record(tmp_path, card())
    record(tmp_path, card(model="smoky", preset="smoke"))
    out = compare(str(tmp_path), exclude=["preset=smoke"])
    assert "lenet5" in out and "smoky" not in out
    assert "smoky" in compare(str(tmp_path), filters=["preset=smoke"]) and "lenet5" not in compare(
        str(tmp_path), filters=["preset=smoke"])


def test_run_it_names_the_records_of_the_chapters_run_it_commands(tmp_path):
    record(tmp_path, card(), argv=("--preset", "quick", "--threads", "1"))  # 02's Run-it, on one thread
    record(tmp_path, card(model="mlp", value=0.02), "mlp", argv=("--experiment", "mlp", "--preset", "quick"))
    assert "0.98%" in compare(str(tmp_path), filters=["run-it"]) and "2.00%" not in compare(
        str(tmp_path), filters=["run-it"])
    assert "2.00%" in compare(str(tmp_path), exclude=["run-it"]) and "0.98%" not in compare(
        str(tmp_path), exclude=["run-it"])


def test_a_cut_experiment_cell_keeps_the_arm_that_tells_its_rows_apart():
    from milestones.compare import squeeze
    assert squeeze("gan_loss: gan-minimax-vs-nonsaturating:nonsaturating", 21) == "gan_lo~:nonsaturating"
    assert squeeze("gan_loss: gan-minimax-vs-nonsaturating:minimax", 21) == "gan_loss: minimax"
    assert squeeze("dcgan_beta1: dcgan-beta1-0.9-vs-0.5:beta1_0.5", 21) == "dcgan_beta~:beta1_0.5"
    assert squeeze("ablations: no overlapping pooling", 21) == "ablations: no overla~"  # no room for the arm
    assert squeeze("adding: lstm1997", 21) == "adding: lstm1997"
    rows = compare(str(RESULTS)).splitlines()
    arms = [r for r in rows if r.startswith("07_vae_gan_diffusion") and "beta1_0." in r]
    assert len(arms) == 2 and max(map(len, rows)) <= 100
