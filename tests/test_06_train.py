"""06_transformer training and sampling: the three experiments' smoke runs, the paper's learning-rate schedule,
checkpoint averaging, and `sample` on a charlm and a translation run, with its user errors."""

import importlib
import json
import math
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import only_run_dir, read_metrics, read_summary

train = importlib.import_module("milestones.06_transformer.train")
sample = importlib.import_module("milestones.06_transformer.sample")
data = importlib.import_module("milestones.06_transformer.data")
seq2seq = importlib.import_module("milestones.06_transformer.seq2seq")
FILES = ["train.de.gz", "train.en.gz", "val.de.gz", "val.en.gz", "test_2016_flickr.de.gz", "test_2016_flickr.en.gz"]


def smoke(out, *flags):
    train.main(["--preset", "smoke", "--out-dir", str(out), *flags])
    return only_run_dir(out, "06_transformer")


@pytest.fixture(scope="module")
def translate_run(tmp_path_factory, data_root):
    return smoke(tmp_path_factory.mktemp("translate"))


@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory, data_root):
    return smoke(tmp_path_factory.mktemp("charlm"), "--experiment", "charlm", "--impl", "auto")


def user_error(fn, argv, capsys) -> str:
    """fn(argv) must exit 2 with one `error:` line and no traceback; returns the line."""
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------------------------------------------------
# The learning rate (eq. 3)
# ---------------------------------------------------------------------------------------------------------

def test_rate_is_the_papers_formula_at_chosen_steps():
    d, w = 512, 4000
    assert seq2seq.rate(1, d, w) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)  # the linear branch
    assert seq2seq.rate(w, d, w) == pytest.approx(1 / math.sqrt(512 * 4000))  # the peak: both branches meet
    assert seq2seq.rate(4 * w, d, w) == pytest.approx(0.5 / math.sqrt(512 * 4000))  # step^-0.5: half at 4 warmup
    assert seq2seq.rate(w // 2, d, w) == pytest.approx(0.5 * seq2seq.rate(w, d, w))  # linear before the peak
    assert max(seq2seq.rate(s, d, w) for s in range(1, 3 * w)) == seq2seq.rate(w, d, w)


def test_the_optimizer_steps_follow_the_schedule(translate_run):
    """The lr logged after step s is the one the next step uses: rate(s + 1) for the smoke preset's model."""
    cfg = json.loads((translate_run / "config.json").read_text())["config"]
    rows = [r for r in read_metrics(translate_run) if r["split"] == "train"]
    assert [r["step"] for r in rows] == [2, 4, 6]
    for r in rows:
        assert r["lr"] == pytest.approx(cfg["lr"] * seq2seq.rate(r["step"] + 1, cfg["d_model"], cfg["warmup"]))


# ---------------------------------------------------------------------------------------------------------
# The three experiments
# ---------------------------------------------------------------------------------------------------------

def test_translate_smoke_writes_bleu_translations_and_the_tokenizer(translate_run):
    card = read_summary(translate_run)
    assert card["metric"] == "BLEU" and 0 <= card["value"] <= 100 and 0 <= card["bleu_lowercase"] <= 100
    assert card["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert card["direction"] == "de->en" and card["tokens_per_second"] > 0 and card["beam"] == 1
    assert "first 20 test sentences" in card["dataset"]
    assert len((translate_run / "translations.txt").read_text().splitlines()) == 20
    tok = data.load_tokenizer(translate_run / "tokenizer.json")
    assert tok.get_vocab_size() == 300
    assert (translate_run / "cross_attention.png").stat().st_size > 1000
    valid = [r for r in read_metrics(translate_run) if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6] and all(r["loss"] > 0 for r in valid)


def test_checkpoint_averaging_is_the_mean_of_the_kept_weights(translate_run):
    kept = sorted(translate_run.glob("weights-*.pt"))
    assert [p.name for p in kept] == ["weights-00000003.pt", "weights-00000006.pt"]  # --average 2, every 3 steps
    a, b = (torch.load(p, weights_only=True)["model"] for p in kept)
    averaged = torch.load(translate_run / "averaged.pt", weights_only=True)
    assert averaged["steps"] == [3, 6] and read_summary(translate_run)["averaged_steps"] == [3, 6]
    for k, v in averaged["model"].items():
        torch.testing.assert_close(v, (a[k] + b[k]) / 2)
    last = torch.load(translate_run / "checkpoint.pt", weights_only=True)["model"]  # training state: unaveraged
    assert all(torch.equal(last[k], b[k]) for k in b)
    assert not all(torch.equal(a[k], b[k]) for k in b)


def test_copy_smoke_reports_exact_match(tmp_path, capsys):
    card = read_summary(smoke(tmp_path, "--experiment", "copy"))
    assert card["metric"] == "exact_match (greedy)" and 0.0 <= card["value"] <= 1.0
    assert card["model"].startswith("copy-transformer") and card["steps"] == 6
    peak = 0.3 * 16 ** -0.5 * 4 ** -0.5  # copy/smoke: --lr 0.3 on eq. 3 at d_model 16, warm-up 4
    assert card["lr_means"] == "factor on the paper's schedule (eq. 3)" and card["peak_lr"] == pytest.approx(peak)
    assert "--lr 0.3: a factor on the paper's schedule (eq. 3), peak rate 0.0375 at step 4" in capsys.readouterr().out


def test_every_06_card_says_what_lr_meant_and_the_peak_rate_it_gave(translate_run, charlm_run):
    """--lr multiplies eq. 3 for the Transformer but is the peak AdamW rate for the GPT: each card's peak_lr is the
    top of the rate the optimizer actually followed, so two runs' peak_lr compare like with like."""
    cfg = json.loads((translate_run / "config.json").read_text())["config"]
    card = read_summary(translate_run)
    top = max(cfg["lr"] * seq2seq.rate(s, cfg["d_model"], cfg["warmup"]) for s in range(1, 10 * cfg["warmup"]))
    assert card["lr_means"] == "factor on the paper's schedule (eq. 3)" and card["peak_lr"] == pytest.approx(top)
    card = read_summary(charlm_run)
    logged = max(r["lr"] for r in read_metrics(charlm_run) if r["split"] == "train")
    assert card["lr_means"] == "peak AdamW rate" and card["peak_lr"] == 3e-3 == pytest.approx(logged)


def test_charlm_smoke_reports_val_loss_and_the_target(charlm_run):
    card = read_summary(charlm_run)
    assert card["metric"] == "val_loss (nats/char)" and card["target"] == 1.886
    assert math.log(65) - 0.5 < card["value"] < math.log(65) + 0.5  # six steps: still near uniform
    assert card["steps_to_target"] is None and card["seconds_to_target"] is None  # not reached in 6 steps
    assert card["tokens_per_second"] > 0 and card["model"] == "gpt-1x32-ctx32"
    assert (charlm_run / "samples" / "sample.txt").read_text()


def test_impl_auto_writes_eq_1_out_only_on_a_cpu_in_bf16(charlm_run):
    rt = lambda device, precision: SimpleNamespace(device=torch.device(device), precision=precision)  # noqa: E731
    assert train.resolve_impl("auto", rt("cpu", "bf16")) == "scratch"
    assert train.resolve_impl("auto", rt("cpu", "fp32")) == "fast"
    assert train.resolve_impl("auto", rt("cuda", "bf16")) == "fast"
    assert train.resolve_impl("scratch", rt("cuda", "fp32")) == "scratch"  # an explicit choice is kept
    # the smoke run (fp32 on this CPU) asked for auto: its record names what ran, so `sample` can rebuild it
    assert json.loads((charlm_run / "config.json").read_text())["config"]["impl"] == "fast"


def test_charlm_windows_depend_on_the_seed_alone():
    ids = torch.arange(1000)
    x, y = train.windows(ids, 4, 16, seed=7)
    x2, _ = train.windows(ids, 4, 16, seed=7)
    assert torch.equal(x, x2) and not torch.equal(x, train.windows(ids, 4, 16, seed=8)[0])
    assert torch.equal(y, x + 1)  # the targets are the next characters


def test_charlm_validation_tiles_the_split_once():
    class Rt:
        rank, world_size = 0, 1
    ids = torch.arange(1001)
    batches = train.tiled(ids, 64, 4, Rt())
    xs = torch.cat([x for x, _ in batches])
    assert xs.shape == (15, 64) and torch.equal(xs.flatten(), ids[:960])  # non-overlapping, in order
    assert torch.equal(torch.cat([y for _, y in batches]).flatten(), ids[1:961])


# ---------------------------------------------------------------------------------------------------------
# User errors
# ---------------------------------------------------------------------------------------------------------

def test_beam_zero_is_a_user_error(capsys, tmp_path):
    err = user_error(train.main, ["--preset", "smoke", "--beam", "0", "--out-dir", str(tmp_path)], capsys)
    assert "--beam must be at least 1" in err


def test_a_missing_multi30k_file_is_named(tmp_path, data_root, monkeypatch, capsys):
    root = tmp_path / "data"
    (root / "multi30k").mkdir(parents=True)
    for name in FILES[:-1]:  # everything but the English test references
        (root / "multi30k" / name).symlink_to(data_root / "multi30k" / name)
    monkeypatch.setenv("MILESTONES_OFFLINE", "1")
    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "smoke", "--data-dir", str(root), "--out-dir", str(tmp_path / "runs")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "test_2016_flickr.en.gz" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing trained


# ---------------------------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------------------------

def test_sample_continues_a_prompt(charlm_run, capsys):
    sample.main(["--run", str(charlm_run), "--prompt", "ROMEO:", "--n", "40", "--seed", "1"])
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 40
    sample.main(["--run", str(charlm_run), "--prompt", "ROMEO:", "--n", "40", "--seed", "1"])
    assert capsys.readouterr().out.rstrip("\n") == text  # seeded


def test_sample_translates_like_the_run_did(translate_run, data_root, capsys):
    """The smoke run decodes greedily with its averaged weights; `sample --source` must give the same output."""
    source = data.read_lines(data_root / "multi30k" / "test_2016_flickr.de.gz")[0]
    sample.main(["--run", str(translate_run), "--source", source])
    first = (translate_run / "translations.txt").read_text().splitlines()[0]
    assert capsys.readouterr().out == first + "\n"


def test_sample_bad_inputs_are_one_line(charlm_run, translate_run, tmp_path, capsys):
    context = json.loads((charlm_run / "config.json").read_text())["config"]["context"]
    err = user_error(sample.main, ["--run", str(charlm_run), "--prompt", "a" * (context + 1)], capsys)
    assert f"more than the model's context of {context}" in err
    assert "outside the vocabulary" in user_error(sample.main, ["--run", str(charlm_run), "--prompt", "caf\u00e9"],
                                                  capsys)
    assert "--source" in user_error(sample.main, ["--run", str(translate_run)], capsys)
    (tmp_path / "empty").mkdir()
    assert "no checkpoint at" in user_error(sample.main, ["--run", str(tmp_path / "empty")], capsys)
    assert "--top-k" in user_error(sample.main, ["--run", str(charlm_run), "--top-k", "0"], capsys)
