"""06_transformer's Table 3 at a budget (ablations.py): each arm is one change from the base model, trained on the
same batches from the same initial state, and scored on the development set."""

import importlib

import pytest
import torch

from common.session import Diverged
from tests.conftest import only_run_dir, read_metrics, read_summary

ablations = importlib.import_module("milestones.06_transformer.ablations")
data = importlib.import_module("milestones.06_transformer.data")
seq2seq = importlib.import_module("milestones.06_transformer.seq2seq")
train = importlib.import_module("milestones.06_transformer.train")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
SMOKE_D = 32  # ablations/smoke's d_model


TRAINED = {}  # arm -> what the smoke run handed to fit(): its config, its model's settings, initial weights, rate


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("ablations")
    real_fit = ablations.fit

    def fit(arm, cfg, rt, run, train_pairs, valid, model, opt, *args, **kw):
        layer = model.encoder[0]
        TRAINED[arm] = dict(cfg=cfg, h=layer.self_attn.h, norm=layer.sub1.norm, positions=model.positions,
                            lr_1=opt.param_groups[0]["lr"],
                            init={k: v.clone() for k, v in model.state_dict().items()})
        return real_fit(arm, cfg, rt, run, train_pairs, valid, model, opt, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ablations, "fit", fit)
        train.main(["--experiment", "ablations", "--preset", "smoke", "--out-dir", str(out)])
    return only_run_dir(out, "06_transformer")


def test_without_warmup_the_rate_is_eq3s_peak_then_eq3():
    d, w = 256, 150
    peak = seq2seq.rate(w, d, w)
    assert [seq2seq.rate_without_warmup(s, d, w) for s in (1, 2, 75, 150)] == [peak] * 4
    for s in (151, 400, 10_000):
        assert seq2seq.rate_without_warmup(s, d, w) == seq2seq.rate(s, d, w) < peak
    assert seq2seq.rate(1, d, w) < peak / 100  # the ramp the arm removes


def test_the_arms_are_table_3s_rows_with_its_dev_bleu():
    # Vaswani et al. 2017, Table 3 (newstest2013 dev BLEU): base 25.8; (A) h = 1: 24.9; (D) epsilon_ls = 0: 25.3;
    # (E) positional embedding instead of sinusoids: 25.7. The no-warm-up arms are not in the table.
    assert {arm: (changes, paper) for arm, (changes, _, paper) in ablations.ARMS.items()} == {
        "base": ({}, 25.8), "one_head": ({"heads": 1}, 24.9), "no_smoothing": ({"label_smoothing": 0.0}, 25.3),
        "learned": ({"positions": "learned"}, 25.7), "post_no_warmup": ({"norm": "post"}, None),
        "pre_no_warmup": ({"norm": "pre"}, None)}
    assert [arm for arm, (_, warm, _) in ablations.ARMS.items() if not warm] == ["post_no_warmup", "pre_no_warmup"]


def test_each_arm_changes_one_thing(smoke_run):
    cfg = train.Config(**{**vars(train.Config()), **train.PRESETS["ablations/smoke"]})
    built = {arm: ablations.build(arm, cfg, 300, 64) for arm in ablations.ARMS}
    base_cfg = built["base"][0]
    for arm, (arm_cfg, model, opt, sched) in built.items():
        changed = {k for k in vars(base_cfg) if getattr(arm_cfg, k) != getattr(base_cfg, k)}
        assert changed == {k for k, v in ablations.ARMS[arm][0].items() if getattr(base_cfg, k) != v}, arm
        assert len(changed) + (not ablations.ARMS[arm][1]) == (arm != "base") + (arm == "pre_no_warmup"), arm
        first = opt.param_groups[0]["lr"]  # the rate of step 1, set by the schedule at construction
        warm = ablations.ARMS[arm][1]
        assert first == pytest.approx(seq2seq.rate(1, SMOKE_D, cfg.warmup) if warm
                                      else seq2seq.rate(cfg.warmup, SMOKE_D, cfg.warmup))
    assert built["one_head"][1].encoder[0].self_attn.h == 1 and built["base"][1].encoder[0].self_attn.h == 2
    assert built["pre_no_warmup"][0].norm == "pre" and built["post_no_warmup"][0].norm == "post"
    assert built["no_smoothing"][0].label_smoothing == 0.0 and base_cfg.label_smoothing == 0.1
    count = {arm: sum(p.numel() for p in b[1].parameters()) for arm, b in built.items()}
    base = count["base"]
    assert count["one_head"] == count["no_smoothing"] == count["post_no_warmup"] == base  # h splits d_model
    assert count["learned"] == base + 64 * SMOKE_D  # one learned table of 64 positions, shared by both stacks
    assert count["pre_no_warmup"] == base + 2 * 2 * SMOKE_D  # pre-LN's final LayerNorm after each stack
    card = read_summary(smoke_run)
    assert card["params_pre_no_warmup"] - card["params_base"] == 2 * 2 * SMOKE_D
    assert card["params_one_head"] == card["params_base"]


def test_the_run_trained_each_arm_with_its_one_change_from_the_same_start(smoke_run):
    """What run_ablations handed to each arm's training: the config differs from base's in the one setting the
    arm names and nothing else, the model is built from it, every arm but `learned` starts from base's very
    weights, and eq. 3 keeps its warm-up in every arm but the no_warmup ones."""
    assert list(TRAINED) == list(ablations.ARMS)
    base = TRAINED["base"]
    for arm, got in TRAINED.items():
        changed = {k: getattr(got["cfg"], k) for k in vars(base["cfg"])
                   if getattr(got["cfg"], k) != getattr(base["cfg"], k)}
        assert changed == {k: v for k, v in ablations.ARMS[arm][0].items() if getattr(base["cfg"], k) != v}, arm
        assert (got["h"], got["norm"], got["positions"]) == (got["cfg"].heads, got["cfg"].norm,
                                                             got["cfg"].positions), arm
        warm = ablations.ARMS[arm][1]
        assert got["lr_1"] == pytest.approx(seq2seq.rate(1 if warm else 4, SMOKE_D, 4)), arm  # smoke: warm-up 4
        shared = set(got["init"]) & set(base["init"])
        if arm != "learned":  # a learned table draws from the RNG before the layers do
            assert all(torch.equal(got["init"][k], base["init"][k]) for k in shared), arm
    assert {arm: changed_one for arm, changed_one in (
        ("one_head", TRAINED["one_head"]["h"]), ("no_smoothing", TRAINED["no_smoothing"]["cfg"].label_smoothing),
        ("learned", TRAINED["learned"]["positions"]), ("pre_no_warmup", TRAINED["pre_no_warmup"]["norm"]))} == \
        dict(one_head=1, no_smoothing=0.0, learned="learned", pre_no_warmup="pre")  # Table 3 rows A, D, E; pre-LN
    assert (base["h"], base["cfg"].label_smoothing, base["positions"], base["norm"]) == (2, 0.1, "sinusoidal", "post")
    losses = {r["model"]: r["loss"] for r in read_metrics(smoke_run) if r["split"] == "train" and r["step"] == 2}
    assert all(losses[arm] != losses["base"] for arm in ablations.ARMS if arm != "base")  # each change acted


def test_smoke_run_scores_every_arm_on_the_dev_set(smoke_run, data_root):
    import sacrebleu

    card = read_summary(smoke_run)
    assert card["arms"] == list(ablations.ARMS)
    assert card["value"] == card["bleu_base"] and card["paper_value"] == 25.8
    references = data.read_lines(data_root / "multi30k" / "val.en.gz")[:20]  # the dev set, as Table 3's
    rows = read_metrics(smoke_run)
    for arm in ablations.ARMS:
        assert card[f"diverged_{arm}"] is False
        written = (smoke_run / f"translations-{arm}.txt").read_text().splitlines()
        assert len(written) == 20
        assert card[f"bleu_{arm}"] == round(sacrebleu.corpus_bleu(written, [references]).score, 2)
        last = [r["loss"] for r in rows if r["split"] == "valid" and r["model"] == arm][-1]
        assert card[f"valid_loss_{arm}"] == round(last, 4)
    assert {r["model"] for r in rows if r["split"] == "dev"} == set(ablations.ARMS)
    assert sorted(r["step"] for r in rows if r["split"] == "valid" and r["model"] == "base") == [3, 6]
    assert (smoke_run / "ablations.png").stat().st_size > 1000
    assert card["dev_sentences"] == 20 and "nrefs:1|case:mixed" in card["bleu_signature"]


def test_an_arm_alone_repeats_its_result_and_a_diverged_arm_is_recorded(smoke_run, tmp_path, monkeypatch):
    real_fit = ablations.fit

    def fit(arm, *args, **kw):
        if arm == "one_head":
            raise Diverged("loss is nan at step 2: training diverged")
        return real_fit(arm, *args, **kw)

    monkeypatch.setattr(ablations, "fit", fit)
    train.main(["--experiment", "ablations", "--preset", "smoke", "--arms", "one_head,learned",
                "--out-dir", str(tmp_path)])
    card, first = read_summary(only_run_dir(tmp_path, "06_transformer")), read_summary(smoke_run)
    assert card["diverged_one_head"] is True and card["valid_loss_one_head"] is None
    assert card["valid_loss_learned"] == first["valid_loss_learned"]  # order and company do not matter
    assert card["metric"] == "dev BLEU of one_head" and card["paper_value"] == 24.9


def test_bad_input_is_one_line(tmp_path, capsys, data_root):
    for flags, says in ((["--arms", "base,two_heads"], "--arms: unknown two_heads"),
                        (["--steps", "0"], "give --steps >= 1"),
                        (["--beam", "0"], "--beam must be at least 1")):
        with pytest.raises(SystemExit) as e:
            train.main(["--experiment", "ablations", "--preset", "smoke", "--out-dir", str(tmp_path), *flags])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error:") and says in err and len(err.splitlines()) == 1
