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
from tests.conftest import built as conftest_built

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
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # fp32 sums in another order
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


def test_the_1997_cell_through_nn_lstms_kernel_equals_the_scratch_cell_outputs_and_gradients():
    """impl="torch" runs the 1997 cell (Sec. 4: c_t = c_{t-1} + i g) through nn.LSTM's kernel with its forget
    gate pinned at exactly 1: the same 3H-row parameters, the same outputs, the same gradients."""
    torch.manual_seed(0)
    scratch = model.Recurrent("lstm", 3, 5, num_layers=2, impl="scratch", forget_gate=False)
    fused = model.Recurrent("lstm", 3, 5, num_layers=2, impl="torch", forget_gate=False)
    fused.load_state_dict(scratch.state_dict())
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in scratch.parameters())
    x = torch.randn(4, 30, 3)
    outs = []
    for net in (scratch, fused):
        y, (h, c) = net(x)
        (y.square().sum() + c.sum()).backward()
        outs.append((y, h, c, [p.grad.clone() for p in net.parameters()]))
    (y1, h1, c1, g1), (y2, h2, c2, g2) = outs
    for a, b in [(y1, y2), (h1, h2), (c1, c2), *zip(g1, g2)]:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # fp32 sums in another order


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
    """Hochreiter & Schmidhuber 1997, section 5.4 (experiment 4), every clause of the task's definition."""
    g = torch.Generator().manual_seed(0)
    T, positions, lengths = 40, set(), set()
    for _ in range(300):
        x, y = adding.adding_batch(64, T, g)
        value, marker = x[..., 0], x[..., 1]
        marked = marker == 1
        lengths.add(x.shape[1])
        assert set(marker.unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert torch.equal(marked.sum(1), torch.full((64,), 2))  # exactly two marked pairs
        pos = marked.nonzero()[:, 1].view(64, 2)  # (64, 2) positions, in order
        # one of the first ten pairs, then one of the first T/2 - 1 pairs still unmarked: both within T/2
        assert (pos[:, 0] < 10).all() and (pos[:, 1] < T // 2).all()
        positions |= set(pos.flatten().tolist())
        # the first and the last pair carry -1 (the first unless it got marked, and then X1 counts as 0)
        assert (marker[:, -1] == -1).all() and ((marker[:, 0] == -1) | marked[:, 0]).all()
        assert (value[marked[:, 0], 0] == 0).all() and (value[~marked[:, 0], 0] != 0).all()
        torch.testing.assert_close(y, 0.5 + (value * marked).sum(1) / 4)  # target 0.5 + (X1 + X2) / 4
        assert value.min() >= -1 and value.max() <= 1
    assert lengths == set(range(T, T + T // 10 + 1))  # lengths between T and T + T/10
    assert positions == set(range(T // 2))  # every one of the first T/2 pairs gets marked, not only the first ten
    # the paper's test: 2,560 sequences, correct when the absolute error is below 0.04; its stop rule: the last
    # 2,000 training sequences all correct and their mean squared error below 0.01
    assert (adding.TEST_SEQUENCES, adding.TOLERANCE, adding.RECENT, adding.RECENT_MSE) == (2560, 0.04, 2000, 0.01)


def test_a_sequence_is_wrong_at_an_absolute_error_of_0_04_or_more():
    class Off(torch.nn.Module):  # answers the target plus a fixed error per sequence
        def forward(self, x):
            return x[:, 0, 0]

    errors = torch.tensor([0.0, 0.039, -0.039, 0.0401, -0.041, 0.2])
    y = torch.rand(6)
    x = torch.zeros(6, 3, 2)
    x[:, 0, 0] = y + errors
    wrong, mse = adding.evaluate(Off(), [(x, y)], CPU)
    assert wrong == pytest.approx(3 / 6) and mse == pytest.approx(float((errors ** 2).mean()), rel=1e-5)


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
    assert {x["model"] for x in card["results"]} == {"rnn", "lstm", "lstm1997"}
    assert card["value"] == next(x["error"] for x in card["results"] if x["model"] == "lstm")  # the LSTM's, at T=10
    assert all(x["wrong"] == round(x["error"] * 2560) and "paper_stop_sequences" in x for x in card["results"])
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
    run = only_run_dir(tmp_path / "p", "05_lstm")
    card = read_summary(run)
    assert card["metric"] == "test_perplexity" and card["paper_value"] == 114.5
    # the card's perplexity is exp of the final net's mean NLL per token over the whole PTB test split, recomputed
    ptb = data.load("ptb", data_root, download=False)
    lm = model.LanguageModel(10_000, 16, num_layers=2)
    lm.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    nll = evaluate_lm(lm, BPTTLoader(ptb["test"], 200, 10, drop_last=False), CPU)
    assert card["value"] == pytest.approx(math.exp(nll), abs=0.006) and card["value"] < 10_000  # chance: 10,000


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
    return parse_config(train.Config, list(argv), train.presets_for(list(argv)))


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
    assert (cfg.forget_gate, cfg.impl, cfg.lengths) == (False, "torch", "100,500,1000")  # 1997 cell, fused
    net = adding.build(cfg, "lstm")
    assert not net.rnn.forget_gate and net.rnn.cells[0].weight_ih.shape == (3 * 4, 2)  # i, g, o: no f block
    assert all(p.abs().max() <= 0.1 for p in net.parameters())
    quick = _config("--experiment", "adding", "--preset", "quick")
    assert quick.models.split(",") == ["rnn", "lstm", "lstm1997"] and quick.optim == "adam"
    old = adding.build(quick, "lstm1997")
    assert not old.rnn.forget_gate and old.rnn.pinned_forget_gate and adding.build(quick, "lstm").rnn.forget_gate


def built(monkeypatch, module, argv) -> dict:
    """What `train.main(argv)` builds for its (first) training loop, seen through `module`'s Session (train for the
    language models, adding for the adding problem; conftest.built). Nothing is trained."""
    return conftest_built(monkeypatch, module, train.main, argv)


def _uniform_in(p: torch.Tensor, r: float) -> None:
    """Within [-r, r], and a tensor of 1,000+ values reaches past 99% of r on both sides."""
    assert p.abs().max() <= r, (p.shape, p.abs().max(), r)
    if p.numel() >= 1000:
        assert p.max() > 0.99 * r and p.min() < -0.99 * r, (p.shape, r)


@pytest.mark.parametrize("size", list(ZAREMBA_2014))
def test_zaremba_paper_preset_builds_the_papers_net_and_optimiser(size, tmp_path, data_root, monkeypatch):
    """Zaremba et al. 2014, section 4.1, as run_lm builds it: 2 LSTM layers of the size's width over the 10k-word
    vocabulary, every parameter uniform in [-init, init], dropout p on the non-recurrent connections, plain SGD at
    LR 1, minibatches of 20 streams, the size's number of epochs."""
    monkeypatch.setenv("MILESTONES_DATA", str(data_root))
    hidden, dropout, epochs, decay, after, init, clip = ZAREMBA_2014[size]
    got = built(monkeypatch, train, ["--experiment", "ptb", "--preset", "paper", "--size", size,
                                     "--out-dir", str(tmp_path)])
    lm, opt, sched, cfg = got["model"], got["opt"], got["sched"], got["cfg"]
    assert lm.embed.weight.shape == (10_000, hidden) and lm.decoder.weight.shape == (10_000, hidden)
    assert lm.rnn.kind == "lstm" and lm.rnn.num_layers == 2 and lm.rnn.hidden_size == hidden
    assert lm.drop.p == dropout and lm.rnn.net.dropout == dropout  # embedding/decoder side, and between layers
    for p in lm.parameters():  # the forget gate's bias too: no forget-bias trick in the paper
        _uniform_in(p.detach(), init)
    assert type(opt) is torch.optim.SGD
    g = opt.param_groups[0]
    assert (g["initial_lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (1.0, 0, 0, False)
    per_epoch = got["per_epoch"]
    assert cfg.batch_size == 20 and per_epoch == (929_589 - 1) // 20 // cfg.bptt and got["total"] == epochs * per_epoch
    lrs = [sched.lr_lambdas[0](e * per_epoch) for e in range(epochs)]  # LR 1 for `after` epochs, then x decay
    assert lrs == pytest.approx([1.0] * after + [decay ** k for k in range(1, epochs - after + 1)], rel=1e-12)
    assert (cfg.clip, cfg.time_sum, cfg.forget_bias) == (clip, True, None)


def test_lm_step_clips_the_window_summed_loss_at_the_configured_norm(tmp_path, data_root, monkeypatch):
    """Zaremba et al. 2014 clip the norm of the gradient of the loss summed over the unrolled steps (averaged over
    the minibatch, as in their code) at 5 (small, medium) or 10 (large): what run_lm hands optimizer_step."""
    monkeypatch.setenv("MILESTONES_DATA", str(data_root))
    losses, steps = [], []
    real_ce, real_step = F.cross_entropy, train.optimizer_step
    monkeypatch.setattr(train.F, "cross_entropy", lambda *a, **k: losses.append(real_ce(*a, **k)) or losses[-1])
    monkeypatch.setattr(train, "optimizer_step", lambda objective, opt, scaler, clip=0.0, params=None: (
        steps.append((objective.detach(), clip)), real_step(objective, opt, scaler, clip=clip, params=params)))
    train.main(["--experiment", "ptb", "--preset", "smoke", "--steps", "2", "--eval-every", "0", "--clip", "7.5",
                "--out-dir", str(tmp_path)])
    assert len(steps) == 2
    for (objective, clip), loss in zip(steps, losses):  # the first cross-entropies are the training steps'
        assert clip == 7.5 and objective == pytest.approx(loss.item() * 10)  # smoke: BPTT 10


def test_zaremba_table_1_perplexities():
    # Zaremba et al. 2014, Table 1 (valid, test): non-regularised (small) 120.7 / 114.5, medium 86.2 / 82.7,
    # large 82.2 / 78.4
    assert train.PAPER_PPL == {"small": (120.7, 114.5), "medium": (86.2, 82.7), "large": (82.2, 78.4)}


def test_adding_paper_preset_builds_the_1997_setup(tmp_path, monkeypatch):
    """Hochreiter & Schmidhuber 1997, section 5.4, as train_one builds it for the first length (T = 100): the 1997
    cell (no forget gate), 2 blocks of 2 cells (4 cells here, a gate per cell), weights uniform in [-0.1, 0.1],
    one sequence per weight change by plain gradient descent at learning rate 0.5, no clipping."""
    got = built(monkeypatch, adding, ["--experiment", "adding", "--preset", "paper", "--threads",
                                      str(torch.get_num_threads()), "--out-dir", str(tmp_path)])
    net, opt, cfg = got["model"], got["opt"], got["cfg"]
    assert net.rnn.pinned_forget_gate and not net.rnn.forget_gate and net.rnn.hidden_size == 4
    assert net.rnn.cells[0].weight_ih.shape == (3 * 4, 2) and net.out.weight.shape == (1, 4)  # i, g, o blocks
    for p in net.parameters():
        _uniform_in(p.detach(), 0.1)
    assert max(p.abs().max() for p in net.parameters()) > 0.09
    assert type(opt) is torch.optim.SGD
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.5, 0, 0)
    assert (cfg.batch_size, cfg.clip, cfg.lengths) == (1, 0.0, "100,500,1000")  # Table 7's T = 100, 500, 1000
    assert got["total"] == 1_000_000  # our budget: the paper's T = 1000 run took 853,000 sequences


def test_adding_card_compares_with_table_7_at_t_100(tmp_path):
    """Table 7: at T = 100 the paper's LSTM got 1 of 2,560 test sequences wrong; the card's value is the LSTM's
    fraction wrong at the longest T, consistent with its count."""
    card = train.main(["--experiment", "adding", "--preset", "smoke", "--lengths", "100", "--models", "lstm",
                       "--steps", "2", "--eval-every", "2", "--threads", str(torch.get_num_threads()),
                       "--out-dir", str(tmp_path)])
    assert card["paper_value"] == 1 / 2560 and "Table 7" in card["paper_source"]
    (r,) = card["results"]
    assert card["value"] == r["error"] and r["wrong"] == round(r["error"] * 2560) and r["T"] == 100


def test_shakespeare_paper_preset_builds_char_rnns_optimiser(tmp_path, data_root, monkeypatch):
    """char-rnn (Karpathy 2015, train.lua defaults; not one of this chapter's papers, but the recipe train.py names):
    RMSprop at 2e-3 with decay rate 0.95 (torch7's epsilon 1e-8), LR x0.97 per epoch after 10, clip 5, init +-0.08,
    2 layers (the preset: 3 x 512 and dropout 0.5, ours), sequences of 50, batches of 50."""
    monkeypatch.setenv("MILESTONES_DATA", str(data_root))
    got = built(monkeypatch, train, ["--experiment", "shakespeare", "--preset", "paper", "--out-dir", str(tmp_path)])
    lm, opt, sched, cfg = got["model"], got["opt"], got["sched"], got["cfg"]
    assert type(opt) is torch.optim.RMSprop
    g = opt.param_groups[0]
    assert (g["initial_lr"], g["alpha"], g["eps"], g["momentum"], g["centered"]) == (2e-3, 0.95, 1e-8, 0, False)
    for p in lm.parameters():
        _uniform_in(p.detach(), 0.08)
    assert (cfg.bptt, cfg.batch_size, cfg.clip, cfg.time_sum) == (50, 50, 5.0, False)
    n = got["per_epoch"]
    assert [sched.lr_lambdas[0](e * n) for e in (0, 9, 10, 11)] == pytest.approx([1, 1, 0.97, 0.97 ** 2])
    assert (lm.rnn.num_layers, lm.rnn.hidden_size, lm.drop.p) == (3, 512, 0.5)
