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
    d, w = 512, 4000  # Vaswani et al. 2017, eq. 3 and sec. 5.3: the base model's d_model, warmup_steps = 4000
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
    assert card["metric"] == "BLEU" and card["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert card["direction"] == "de->en" and card["tokens_per_second"] > 0
    assert card["beam"] == 4 and card["alpha"] == 0.6  # Vaswani et al. 2017, sec. 6.1: the smoke run decodes so too
    assert "first 20 test sentences" in card["dataset"]
    assert len((translate_run / "translations.txt").read_text().splitlines()) == 20
    tok = data.load_tokenizer(translate_run / "tokenizer.json")
    assert tok.get_vocab_size() == 300
    assert (translate_run / "cross_attention.png").stat().st_size > 1000
    valid = [r for r in read_metrics(translate_run) if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6] and all(r["loss"] > 0 for r in valid)


def test_the_card_is_sacrebleu_of_the_written_translations_against_the_references(tmp_path, monkeypatch,
                                                                                  data_root):
    """Recomputed here with sacrebleu from translations.txt and the first 20 raw English test lines, in order,
    the card's cased and lowercased BLEU come out the same. Every second hypothesis is swapped for the ids of
    its reference (a six-step model writes nothing BLEU can match), so the score is far from 0 and wrong
    references, a wrong order or a lossy detokenisation would each change it. The decoder is called once,
    with the paper's beam 4 and alpha 0.6 (Vaswani et al. 2017, sec. 6.1)."""
    import sacrebleu

    references = data.read_lines(data_root / "multi30k" / "test_2016_flickr.en.gz")[:20]
    real, calls = train.decode.translate, []

    def translate(model, sources, bos, eos, pad, beam, alpha, **kw):
        calls.append((len(sources), beam, alpha))
        hyps = real(model, sources, bos, eos, pad, beam, alpha, **kw)
        tok = data.load_tokenizer(next(tmp_path.glob("06_transformer/*/tokenizer.json")))
        return [data.encode(tok, [references[i]])[0] if i % 2 else h for i, h in enumerate(hyps)]

    monkeypatch.setattr(train.decode, "translate", translate)
    run = smoke(tmp_path)
    card, written = read_summary(run), (run / "translations.txt").read_text().splitlines()
    assert calls == [(20, 4, 0.6)] and written[1::2] == references[1::2]
    cased = sacrebleu.corpus_bleu(written, [references])
    lower = sacrebleu.corpus_bleu(written, [references], lowercase=True)
    assert card["value"] == round(cased.score, 2) and card["bleu_lowercase"] == round(lower.score, 2)
    assert 20 < card["value"] < 100


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


def test_the_copy_task_is_learnt_in_seconds(tmp_path, capsys):
    """150 steps of a 1 + 1 layer, d_model 32 Transformer on sequences of 1-5 of 6 symbols: greedy decoding
    then copies most of 500 held-out sequences exactly (measured: 86.6%; by chance it would be below 0.1%)."""
    card = read_summary(smoke(tmp_path, "--experiment", "copy", "--d-model", "32", "--d-ff", "64", "--steps", "150",
                              "--warmup", "30", "--lr", "0.5", "--batch-tokens", "1000", "--copy-length", "5",
                              "--copy-vocab", "10", "--dropout", "0", "--eval-every", "150", "--ckpt-every", "150"))
    assert card["metric"] == "exact_match (greedy)" and card["value"] > 0.75
    assert card["model"] == "copy-transformer-1+1x32-h2" and card["steps"] == 150
    peak = 0.5 * 32 ** -0.5 * 30 ** -0.5  # --lr 0.5 on eq. 3 at d_model 32, warm-up 30
    assert card["lr_means"] == "factor on the paper's schedule (eq. 3)" and card["peak_lr"] == pytest.approx(peak)
    assert "--lr 0.5: a factor on the paper's schedule (eq. 3), peak rate 0.0161 at step 30" in capsys.readouterr().out


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
    """The smoke run beam-searches with its averaged weights; `sample --source` must give the same output."""
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
