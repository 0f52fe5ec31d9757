"""06_transformer --experiment vs_lstm: the GPT against 05's LSTM LM at equal parameters and equal budget."""

import importlib
import json
from types import SimpleNamespace

import pytest
import torch

from common.device import count_params
from common.loop import evaluate_lm
from tests.conftest import keep_sessions, only_run_dir, read_metrics, read_summary

train = importlib.import_module("milestones.06_transformer.train")
vs = importlib.import_module("milestones.06_transformer.vs_lstm")
charlm = importlib.import_module("milestones.06_transformer.charlm")
LanguageModel = importlib.import_module("milestones.05_lstm.model").LanguageModel
CPU = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"), all_reduce_sum=lambda t: t,
                      autocast=lambda: torch.autocast("cpu", enabled=False))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("vs_lstm")
    train.main(["--experiment", "vs_lstm", "--preset", "smoke", "--out-dir", str(out)])
    return only_run_dir(out, "06_transformer")


@pytest.mark.parametrize("vocab, hidden, layers", [(65, 156, 2), (10, 7, 1), (100, 33, 3)])
def test_the_lstm_parameter_formula_counts_05s_model(vocab, hidden, layers):
    assert vs.lstm_lm_params(vocab, hidden, layers) == count_params(LanguageModel(vocab, hidden, layers))


@pytest.mark.parametrize("preset", ["quick", "smoke", "default"])
def test_the_matched_lstm_has_the_gpts_parameter_count_within_5_percent(preset):
    cfg = {**vars(train.Config()), **train.PRESETS[f"vs_lstm/{preset}"], "impl": "fast"}  # impl: no parameters
    target = count_params(charlm.gpt_from(cfg, 65))
    h = vs.matched_hidden(target, 65, cfg["lstm_layers"])
    got = count_params(LanguageModel(65, h, cfg["lstm_layers"]))
    assert abs(got / target - 1) < 0.05
    for other in (h - 1, h + 1):  # and no other width is closer
        assert abs(vs.lstm_lm_params(65, other, cfg["lstm_layers"]) - target) >= abs(got - target)


def test_counted_in_steps_the_schedule_is_charlms():
    cfg = SimpleNamespace(warmup=5, schedule="cosine")
    budget = vs.Budget(0, 40, 5, torch.device("cpu"))
    rates = [charlm.lr_factor(cfg, s, budget.done(s)) for s in range(45)]
    assert rates == [charlm.lr_lambda(cfg, 40)(s) for s in range(45)]
    assert rates[4] == 1.0 and rates[40] == pytest.approx(0.1)


def test_counted_in_seconds_the_cosine_runs_over_the_budget_after_the_warm_up():
    now = [0.0]
    budget = vs.Budget(10.0, 10 ** 9, 2, torch.device("cpu"))
    budget.clock = lambda: now[0]
    done = []
    for step, t in enumerate([0.5, 1.0, 5.5, 10.0], start=1):  # a step ends at each of these times
        budget.start()
        now[0] = t
        budget.stop(step)
        done.append(budget.done(step))
    assert budget.at_warmup == 1.0  # the warm-up (2 steps) took 1 s: the cosine has the other 9
    assert done == [0.0, 0.0, pytest.approx(0.5), pytest.approx(1.0)]


class FakeEvent:
    """torch.cuda.Event on a CPU-only machine: each record() takes the next time on a fake GPU clock (ms)."""
    clock, syncs = [0.0], [0]

    def __init__(self, enable_timing):
        assert enable_timing

    def record(self):
        FakeEvent.clock[0] += 250.0
        self.t = FakeEvent.clock[0]

    def synchronize(self):
        FakeEvent.syncs[0] += 1

    def elapsed_time(self, end):
        return end.t - self.t


@pytest.mark.parametrize("seconds", [0.0, 100.0])
def test_on_a_gpu_the_budget_waits_for_it_only_when_its_seconds_are_read(monkeypatch, seconds):
    """A run ended by its step count never synchronises per step; a seconds budget reads (and waits) each step."""
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    FakeEvent.syncs[0] = 0
    budget = vs.Budget(seconds, 10, 0, torch.device("cuda"))
    for step in range(1, 5):
        budget.start()
        budget.stop(step)
        assert budget.spent() == (None if not seconds else pytest.approx(0.25 * step))
    assert FakeEvent.syncs[0] == (0 if not seconds else 4)
    assert budget.used == budget.wall == pytest.approx(1.0)  # four steps of 250 ms, the gaps between left out
    assert FakeEvent.syncs[0] == (1 if not seconds else 4)  # nothing was pending any more


def test_validation_reads_each_lstm_window_on_its_own():
    """From a zero state: the order of the windows does not matter (a carried state would make it matter)."""
    torch.manual_seed(0)
    lstm = LanguageModel(11, 8, 2, init_range=vs.INIT_RANGE)
    ids = torch.randint(11, (401,))
    batches = charlm.tiled(ids, 20, 4, CPU)
    forward = evaluate_lm(vs.Windowed(lstm), batches, CPU)
    assert forward == pytest.approx(evaluate_lm(vs.Windowed(lstm), batches[::-1], CPU), abs=1e-9)
    assert forward != pytest.approx(evaluate_lm(lstm, batches, CPU), abs=1e-6)  # 05's carried state differs


def test_smoke_run_writes_the_plot_and_both_nets_results(smoke_run):
    card = read_summary(smoke_run)
    assert (smoke_run / "vs_lstm.png").stat().st_size > 5000
    assert {"checkpoint-gpt-1x32.pt", f"checkpoint-lstm-2x{card['lstm_hidden']}.pt"} <= \
        {p.name for p in smoke_run.iterdir()}
    assert abs(card["lstm_params"] / card["gpt_params"] - 1) < 0.05 and card["params"] == card["gpt_params"]
    assert card["value"] == card["gpt_val_loss"]
    assert (card["lr_means"], card["peak_lr"], card["peak_lr_lstm"]) == ("peak AdamW rate", 3e-3, 3e-3)
    for arm in ("gpt", "lstm"):
        assert card[f"{arm}_steps"] == 6 and card[f"{arm}_tokens"] == 6 * 8 * 32
        assert card[f"{arm}_tokens_per_second"] > 0 and card[f"{arm}_seconds"] > 0
        curve = card[f"{arm}_curve"]
        assert [p["step"] for p in curve] == [0, 3, 6] and card[f"{arm}_val_loss"] == round(curve[-1]["val_loss"], 4)
        assert 3.0 < curve[-1]["val_loss"] < curve[0]["val_loss"] < 4.4  # from about ln 65 = 4.17, downwards
    rows = read_metrics(smoke_run)
    assert {r["model"] for r in rows} == {"gpt-1x32", f"lstm-2x{card['lstm_hidden']}"}
    config = json.loads((smoke_run / "config.json").read_text())["config"]
    assert config["budget_seconds"] == 0 and config["steps"] == 6


def test_a_seconds_budget_stops_each_net_once_spent(tmp_path, data_root, monkeypatch):
    sessions = keep_sessions(monkeypatch, vs)
    train.main(["--experiment", "vs_lstm", "--preset", "smoke", "--steps", "0", "--budget-seconds", "0.3",
                "--eval-every", "100000", "--out-dir", str(tmp_path)])
    card = read_summary(only_run_dir(tmp_path, "06_transformer"))
    for arm, sess in zip(("gpt", "lstm"), sessions):
        assert card[f"{arm}_seconds"] >= 0.3 and card[f"{arm}_steps"] == sess.step_count == sess.total
        assert [p["step"] for p in card[f"{arm}_curve"]] == [0, card[f"{arm}_steps"]]  # evaluated at the last step
        meter = sess.meter()  # the bar counted budget seconds, not a step ceiling, and ended full
        assert (meter["done"], meter["total"], meter["unit"]) == (0.3, 0.3, "s")
        assert meter["eta_seconds"] in (None, 0.0) and "100%" in meter["text"] and "0.3/0.3 budget s" in meter["text"]


def test_user_mistakes_are_one_line(smoke_run, tmp_path, capsys):
    base = ["--experiment", "vs_lstm", "--preset", "smoke", "--out-dir", str(tmp_path)]
    for flags, says in [(["--budget-seconds", "-1"], "--budget-seconds"),
                        (["--resume", str(smoke_run / "checkpoint-gpt-1x32.pt")], "vs_lstm does not resume"),
                        (["--lstm-layers", "0"], "--lstm-layers must be at least 1")]:
        with pytest.raises(SystemExit) as e:
            train.main([*base, *flags])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error:") and len(err.splitlines()) == 1 and says in err
    with pytest.raises(SystemExit):
        train.main(["--experiment", "charlm", "--preset", "smoke", "--lstm-lr", "0.01"])
    assert "--lstm-lr is for --experiment vs_lstm" in capsys.readouterr().err
