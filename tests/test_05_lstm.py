"""05_lstm: the cell against nn.LSTM, gradient flow, BPTT batching, perplexity, smoke runs, bad input."""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from common import data
from common.data.text import BPTTLoader, bptt_streams
from common.device import Runtime
from common.loop import evaluate_lm
from tests.conftest import only_run_dir, read_metrics, read_summary, run_cli

model = importlib.import_module("milestones.05_lstm.model")
adding = importlib.import_module("milestones.05_lstm.adding")
train = importlib.import_module("milestones.05_lstm.train")
CPU = Runtime(device=torch.device("cpu"))


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_scratch_matches_torch_with_same_weights(kind):
    torch.manual_seed(0)
    fast = model.Recurrent(kind, 7, 16, num_layers=2, impl="torch")
    ours = model.Recurrent(kind, 7, 16, num_layers=2, impl="scratch")
    ours.load_state_dict(fast.state_dict())  # nn.LSTM's weight_ih_l0 ... land in our cells
    x = torch.randn(3, 13, 7, requires_grad=True)
    h0 = torch.randn(2, 3, 16)
    state = (h0, torch.randn(2, 3, 16)) if kind == "lstm" else h0
    y_fast, s_fast = fast(x, state)
    y_ours, s_ours = ours(x, state)
    torch.testing.assert_close(y_ours, y_fast, rtol=1e-5, atol=1e-6)
    for a, b in zip(s_ours if kind == "lstm" else [s_ours], s_fast if kind == "lstm" else [s_fast]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    g_fast = torch.autograd.grad(y_fast.square().sum(), [x, fast.net.weight_hh_l0])
    g_ours = torch.autograd.grad(y_ours.square().sum(), [x, ours.cells[0].weight_hh])
    for a, b in zip(g_ours, g_fast):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    back = model.Recurrent(kind, 7, 16, num_layers=2, impl="torch")
    back.load_state_dict(ours.state_dict())  # and back again
    torch.testing.assert_close(back(x, state)[0], y_fast)


def test_cell_equations_one_step():
    torch.manual_seed(1)
    for forget_gate in (True, False):
        cell = model.LSTMCell(3, 4, forget_gate=forget_gate)
        x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
        pre = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
        if forget_gate:
            i, f, g, o = pre.sigmoid()[:, :4], pre.sigmoid()[:, 4:8], pre.tanh()[:, 8:12], pre.sigmoid()[:, 12:]
        else:  # 1997: c_t = c_{t-1} + i g
            i, f, g, o = pre.sigmoid()[:, :4], torch.ones(2, 4), pre.tanh()[:, 4:8], pre.sigmoid()[:, 8:]
        c_want = f * c + i * g
        h_got, c_got = cell.step(cell.input_part(x), h, c)
        torch.testing.assert_close(c_got, c_want)
        torch.testing.assert_close(h_got, o * c_want.tanh())
    assert model.LSTMCell(3, 4, forget_gate=False).weight_ih.shape == (12, 3)
    with pytest.raises(ValueError, match="scratch"):
        model.Recurrent("lstm", 3, 4, impl="torch", forget_gate=False)


def test_forget_bias_sets_the_sum_of_both_bias_vectors():
    lstm = model.Recurrent("lstm", 5, 8, num_layers=2, impl="torch")
    before = lstm.net.bias_ih_l1.detach().clone()
    model.set_forget_bias(lstm, 1.0)
    for layer in range(2):
        p = lstm.layer_params(layer)
        total = p["bias_ih"] + p["bias_hh"]
        assert torch.equal(total[8:16], torch.ones(8))
    torch.testing.assert_close(lstm.net.bias_ih_l1[:8], before[:8])  # the other gates keep their init
    with pytest.raises(ValueError):
        model.set_forget_bias(model.Recurrent("rnn", 5, 8), 1.0)


def test_lstm_keeps_more_gradient_than_rnn_at_lag_100():
    rnn = adding.grad_norm_vs_lag("rnn", 120, 32)
    lstm = adding.grad_norm_vs_lag("lstm", 120, 32, forget_gate=True, forget_bias=1.0)
    assert rnn[100] < 1e-15  # vanished: a factor ~ 0.7 per step for 100 steps
    assert lstm[100] > 1e4 * rnn[100]
    assert rnn[100] < rnn[10] * 1e-6  # and it decays with the lag


def test_bptt_batches_are_shifted_streams_with_carried_positions():
    ids = torch.arange(103)
    streams = bptt_streams(ids, 4)  # (4, 25): row b holds tokens 25b .. 25b+24, 3 dropped
    assert streams.shape == (4, 25) and torch.equal(streams[:, 0], torch.tensor([0, 25, 50, 75]))
    loader = BPTTLoader(ids, batch_size=4, bptt=7, drop_last=False)
    windows = list(loader)
    assert len(windows) == 4 and [x.shape[1] for x, _ in windows] == [7, 7, 7, 3]
    for k, (x, y) in enumerate(windows):
        assert torch.equal(y, x + 1)  # target = next token
        if k:
            assert torch.equal(x[:, 0], windows[k - 1][1][:, -1])  # window k starts where k-1 ended
    assert len(BPTTLoader(ids, 4, 7, drop_last=True)) == 3  # training drops the short tail
    r0, r1 = (BPTTLoader(ids, 4, 7, rank=r, world_size=2).data for r in (0, 1))
    assert torch.equal(torch.cat([r0, r1]), streams)  # DDP ranks: disjoint streams


def test_perplexity_is_exp_of_mean_token_nll_and_state_is_carried():
    torch.manual_seed(0)
    lm = model.LanguageModel(11, 8, num_layers=2)
    ids = torch.randint(0, 11, (61,))
    short = evaluate_lm(lm, BPTTLoader(ids, 2, 4, drop_last=False), CPU)  # common's, on our (logits, state) model
    whole = evaluate_lm(lm, BPTTLoader(ids, 2, 100, drop_last=False), CPU)
    assert abs(short - whole) < 1e-5  # carrying the state across windows = one long window
    streams = bptt_streams(ids, 2)
    with torch.no_grad():
        logits, _ = lm(streams[:, :-1])
    nll = -torch.log_softmax(logits, -1).gather(-1, streams[:, 1:, None]).mean()  # by hand
    assert abs(whole - nll.item()) < 1e-5


def test_adding_problem_sequences():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = adding.adding_batch(64, 50, g)
        assert x.shape[0] == 64 and 50 <= x.shape[1] <= 55
        value, marker = x[..., 0], x[..., 1]
        marked = marker == 1
        assert torch.equal(marked.sum(1), torch.full((64,), 2))
        assert marked[:, :10].any(1).all() and not marked[:, 25:].any()  # one in the first 10, both in the first T/2
        torch.testing.assert_close(y, 0.5 + (value * marked).sum(1) / 4)
        assert (marker[:, -1] == -1).all() and ((marker[:, 0] == -1) | marked[:, 0]).all()


def test_param_count_of_zaremba_small():
    V, H = 10_000, 200
    lm = model.LanguageModel(V, H, num_layers=2)
    per_layer = 4 * H * (H + H) + 2 * 4 * H  # W_ih, W_hh and PyTorch's two bias vectors
    assert sum(p.numel() for p in lm.parameters()) == V * H + 2 * per_layer + H * V + V == 4_653_200


def test_overfits_one_batch():
    torch.manual_seed(0)
    lm = model.LanguageModel(20, 32, num_layers=1, impl="scratch")
    x = torch.randint(0, 20, (4, 12))
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(lm(x[:, :-1])[0].flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_text_corpora(data_root):
    ptb = data.load("ptb", data_root, download=False)
    assert [len(ptb[s]) for s in ("train", "valid", "test")] == [929_589, 73_760, 82_430]
    assert len(ptb["vocab"]) == 10_000 and ptb["vocab"][int(ptb["train"][24])] == "<eos>"
    shakespeare = data.load("tinyshakespeare", data_root, download=False)
    assert len(shakespeare["vocab"]) == 65
    assert len(shakespeare["train"]) + len(shakespeare["valid"]) == 1_115_394
    assert "".join(shakespeare["vocab"][i] for i in shakespeare["train"][:14]) == "First Citizen:"


def test_smoke_runs_and_sampling(tmp_path, data_root):
    env = {"MILESTONES_DATA": str(data_root)}
    r = run_cli("train", "05_lstm", "--experiment", "adding", "--preset", "smoke", "--out-dir", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    card = read_summary(only_run_dir(tmp_path / "a", "05_lstm"))
    assert {x["model"] for x in card["results"]} == {"rnn", "lstm", "lstm1997"} and 0 <= card["value"] <= 1
    assert all(0 <= x["wrong"] <= 2560 and "paper_stop_sequences" in x for x in card["results"])
    assert (only_run_dir(tmp_path / "a", "05_lstm") / "grad_norm_vs_lag.png").stat().st_size > 1000

    r = run_cli("train", "05_lstm", "--experiment", "shakespeare", "--preset", "smoke", "--out-dir", tmp_path / "s",
                env=env)
    assert r.returncode == 0, r.stderr
    run = only_run_dir(tmp_path / "s", "05_lstm")
    card = read_summary(run)
    assert card["metric"].startswith("val_loss") and card["value"] < math.log(65) + 0.1
    assert any(m["split"] == "valid" for m in read_metrics(run))
    # the race clock: the smoke preset evaluates at steps 5 and 10; --target 0 is never reached
    assert card["target"] == 1.886 and card["steps_to_target"] is None and card["seconds_to_target"] is None
    r = run_cli("train", "05_lstm", "--experiment", "shakespeare", "--preset", "smoke", "--out-dir", tmp_path / "t",
                "--target", "100", "--sample-chars", "0", env=env)
    hit = read_summary(only_run_dir(tmp_path / "t", "05_lstm"))
    assert hit["steps_to_target"] == 5 and hit["tokens_to_target"] == 5 * 8 * 20
    assert 0 < hit["train_seconds_to_target"] <= hit["train_seconds"] and hit["seconds_to_target"] <= hit["wall_seconds"]
    r = run_cli("sample", "05_lstm", "--run", run, "--length", "40", "--prompt", "ROMEO:")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:") and len(r.stdout.rstrip("\n")) >= 40

    r = run_cli("train", "05_lstm", "--experiment", "ptb", "--preset", "smoke", "--out-dir", tmp_path / "p", env=env)
    assert r.returncode == 0, r.stderr
    card = read_summary(only_run_dir(tmp_path / "p", "05_lstm"))
    assert card["metric"] == "test_perplexity" and 1 < card["value"] < 10_000 and card["paper_value"] == 114.5


def test_adding_nets_stop_once_solved_each_with_its_own_checkpoint(tmp_path):
    threads = str(torch.get_num_threads())  # in-process: leave this process's thread count as it was
    card = train.main(["--experiment", "adding", "--preset", "smoke", "--lengths", "10,12", "--models", "lstm",
                       "--solved-error", "1", "--threads", threads, "--out-dir", str(tmp_path)])
    assert [(r["T"], r["steps"], r["solved"]) for r in card["results"]] == [(10, 10, True), (12, 10, True)]
    assert card["steps"] == 20  # smoke: 20 steps each, eval every 10: both stop at the first evaluation
    run = only_run_dir(tmp_path, "05_lstm")
    for T in (10, 12):
        ckpt = torch.load(run / f"checkpoint-lstm-T{T}.pt", weights_only=True)
        assert ckpt["step"] == 10 and ckpt["results"]["test_error"] == card["results"][T == 12]["error"]
    tests = [m for m in read_metrics(run) if m["split"] == "test"]
    assert [(m["model"], m["T"], m["step"]) for m in tests] == [("lstm", 10, 10), ("lstm", 12, 10)]


def test_adding_lr_sweep_trains_every_rate_and_reports_each_model_at_its_best(tmp_path):
    threads = str(torch.get_num_threads())
    card = train.main(["--experiment", "adding", "--preset", "smoke", "--models", "rnn,lstm", "--lrs", "1e-3,3e-2",
                       "--threads", threads, "--out-dir", str(tmp_path)])
    assert card["lrs"] == [1e-3, 3e-2] and len(card["sweep"]) == 4 and card["steps"] == 4 * 20
    for kind in ("rnn", "lstm"):
        runs = [r for r in card["sweep"] if r["model"] == kind]
        assert [r["lr"] for r in runs] == [1e-3, 3e-2] and runs[0]["mse"] != runs[1]["mse"]
        (best,) = [r for r in card["results"] if r["model"] == kind]
        assert best == min(runs, key=lambda r: (r["wrong"], r["sequences"]))
    run = only_run_dir(tmp_path, "05_lstm")
    assert {p.name for p in run.glob("checkpoint-*.pt")} == {
        f"checkpoint-{k}-T10-lr{lr}.pt" for k in ("rnn", "lstm") for lr in ("0.001", "0.03")}
    assert {(m["model"], m["lr"]) for m in read_metrics(run) if m["split"] == "test"} == {
        (k, lr) for k in ("rnn", "lstm") for lr in (1e-3, 3e-2)}


def test_resume_mid_epoch_is_an_exact_continuation(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("MILESTONES_DATA", str(data_root))
    common = ["--experiment", "ptb", "--preset", "smoke", "--dropout", "0.3"]  # dropout: the RNG must resume too
    train.main(common + ["--steps", "8", "--out-dir", str(tmp_path / "straight")])
    train.main(common + ["--steps", "5", "--out-dir", str(tmp_path / "split")])
    run = only_run_dir(tmp_path / "split", "05_lstm")
    train.main(common + ["--steps", "8", "--resume", str(run)])  # carried LSTM state restored mid-epoch
    a = torch.load(only_run_dir(tmp_path / "straight", "05_lstm") / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("args, message", [
    (["--experiment", "ptb", "--forget-gate", "false"], "--impl scratch"),
    (["--experiment", "adding", "--lengths", "5"], "at least 10"),
    (["--experiment", "adding", "--models", "gru"], "--models"),
    (["--experiment", "adding", "--lrs", "0.01,-1"], "--lrs takes positive learning rates"),
    (["--experiment", "ptb", "--dropout", "1.5"], "--dropout"),
])
def test_bad_input_exits_2_with_a_message(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # in-process: the same main() the CLI calls
        train.main(["--preset", "smoke", "--out-dir", str(tmp_path), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")
    assert not (tmp_path / "05_lstm").exists()  # refused before any run directory is made


def test_bad_input_on_the_command_line(tmp_path):
    r = run_cli("train", "05_lstm", "--experiment", "adding", "--lengths", "ten", "--out-dir", tmp_path)
    assert r.returncode == 2 and "--lengths" in r.stderr and "Traceback" not in r.stderr


def test_sample_refuses_a_non_lm_run(tmp_path):
    r = run_cli("sample", "05_lstm", "--run", tmp_path)
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr


def _config(*argv):
    from common.config import parse_config
    return parse_config(train.Config, list(argv), train.sized_presets(list(argv)))


ZAREMBA_2014 = {  # section 4.1 of the paper: (hidden, dropout, epochs, decay, decay after epoch, init, clip)
    "small": (200, 0.0, 13, 0.5, 4, 0.1, 5.0),
    "medium": (650, 0.5, 39, 1 / 1.2, 6, 0.05, 5.0),
    "large": (1500, 0.65, 55, 1 / 1.15, 14, 0.04, 10.0),
}


@pytest.mark.parametrize("size", list(ZAREMBA_2014))
def test_each_zaremba_size_is_the_papers_recipe(size):
    hidden, dropout, epochs, decay, after, init, clip = ZAREMBA_2014[size]
    cfg = _config("--experiment", "ptb", "--preset", "paper", "--size", size)
    assert (cfg.layers, cfg.hidden, cfg.dropout, cfg.epochs) == (2, hidden, dropout, epochs)
    assert (cfg.lr, cfg.optim, cfg.init_range, cfg.clip, cfg.batch_size) == (1.0, "sgd", init, clip, 20)
    assert cfg.bptt == (20 if size == "small" else 35)
    factor = train.lm_step_lr(cfg, steps_per_epoch=10)  # LR 1 for `after` epochs, then x decay per epoch
    assert [factor(10 * e) for e in range(after)] == [1.0] * after
    assert factor(10 * after) == pytest.approx(decay) and factor(10 * (after + 1)) == pytest.approx(decay ** 2)
    assert _config("--experiment", "ptb", "--size", size).hidden == hidden  # the default preset: the same recipe


def test_dropout_acts_on_non_recurrent_connections_only():
    """Zaremba et al.'s placement: the embedding's output, between layers, before the decoder; never h -> h."""
    torch.manual_seed(0)
    lm = model.LanguageModel(50, 16, num_layers=2, dropout=0.5, impl="scratch").train()
    inputs, h_in, h_out = [], {0: [], 1: []}, {0: [], 1: []}
    for n, cell in enumerate(lm.rnn.cells):
        def part(x, f=cell.input_part):
            inputs.append(x)
            return f(x)

        def step(wx, h, c, f=cell.step, n=n):
            h_in[n].append(h)
            out = f(wx, h, c)
            h_out[n].append(out[0])
            return out
        cell.input_part, cell.step = part, step
    decoder_in = []
    lm.decoder.register_forward_pre_hook(lambda m, i: decoder_in.append(i[0]))
    tokens = torch.randint(0, 50, (4, 6))
    lm(tokens)

    def dropped(got, clean):  # inverted dropout at p = 0.5: every unit is 0 or twice its clean value, many are 0
        assert ((got == 0) | torch.isclose(got, 2 * clean)).all() and (got == 0).float().mean() > 0.2
    dropped(inputs[0], lm.embed(tokens))  # embedding -> layer 1
    dropped(inputs[1], torch.stack(h_out[0], 1))  # layer 1 -> layer 2
    dropped(decoder_in[0], torch.stack(h_out[1], 1))  # layer 2 -> decoder
    for n in (0, 1):  # h_{t-1} -> h_t: each step gets exactly what the step before returned
        assert all(a is b for a, b in zip(h_in[n][1:], h_out[n][:-1]))
    assert lm.rnn.dropout == 0.5 and model.Recurrent("lstm", 8, 8, 2, 0.5).net.dropout == 0.5  # nn.LSTM: between layers


def test_the_1997_arm_has_no_forget_gate_and_the_paper_preset_is_online_sgd():
    cfg = _config("--experiment", "adding", "--preset", "paper")
    assert (cfg.optim, cfg.lr, cfg.batch_size, cfg.hidden, cfg.clip, cfg.init_range) == ("sgd", 0.5, 1, 4, 0.0, 0.1)
    assert (cfg.forget_gate, cfg.impl, cfg.lengths) == (False, "scratch", "100,500,1000")
    net = adding.build(cfg, "lstm")
    assert not net.rnn.forget_gate and net.rnn.cells[0].weight_ih.shape == (3 * 4, 2)  # i, g, o: no f block
    assert all(p.abs().max() <= 0.1 for p in net.parameters())
    quick = _config("--experiment", "adding", "--preset", "quick")
    assert quick.models.split(",") == ["rnn", "lstm", "lstm1997"] and quick.optim == "adam"
    old = adding.build(quick, "lstm1997")
    assert not old.rnn.forget_gate and old.rnn.impl == "scratch" and adding.build(quick, "lstm").rnn.forget_gate
