"""02_cnn_lenet: the 1989 zip-code net and LeNet-5 — parameter counts, Table I, the RBF output and its loss,
the training loop on real MNIST, and the run-record/CLI contract."""

import importlib
import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import Built, only_run_dir, read_metrics, read_summary, run_cli
from tests.conftest import built as conftest_built

lenet = importlib.import_module("milestones.02_cnn_lenet.model")
train = importlib.import_module("milestones.02_cnn_lenet.train")
inputs = importlib.import_module("milestones.02_cnn_lenet.inputs")
sdlm = importlib.import_module("milestones.02_cnn_lenet.sdlm")
from common.device import count_params  # noqa: E402
from common.errors import UserError  # noqa: E402

# Table I of LeCun et al. 1998, transcribed by hand: row = S2 map, column = C3 map, X = connected.
TABLE_I = [
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
]


def test_c3_connection_table_is_the_papers_table_1():
    expected = torch.tensor([[c == "X" for c in row] for row in TABLE_I])
    assert torch.equal(lenet.c3_table(), expected)
    assert int(expected.sum()) == 60  # 6*3 + 6*4 + 3*4 + 6 connected kernels


def test_faithful_parameter_counts_are_the_papers():
    assert count_params(lenet.LeNet1989()) == 9760
    assert count_params(lenet.LeNet5()) == 60000
    per_layer = dict(lenet.describe(lenet.LeNet5()))
    assert per_layer == {"c1": 156, "c3": 1516, "c5": 48120, "f6": 10164, "s2": 12, "s4": 32}
    assert dict(lenet.describe(lenet.LeNet1989())) == {"h1": 300, "h2": 2400, "h3": 5790, "out": 310,
                                                       "h1_bias": 768, "h2_bias": 192}
    # options change the budget by exactly the layers they replace
    assert count_params(lenet.LeNet5(c3="full")) == 60000 + 900
    assert count_params(lenet.LeNet5(pool="max")) == 60000 - 44
    assert count_params(lenet.LeNet5(output="softmax")) == 60000 + 850


def test_lenet5_connections_counted_from_its_layers_are_the_papers():
    """A connection is one input (or the bias) feeding one unit. Counted from the model itself: each layer's
    input shape is captured by a hook on a real forward pass; a copy of the layer with every weight 1 and
    every bias 0, fed ones, outputs at each unit the number of inputs wired to it; each unit's bias adds one."""
    import copy
    net = lenet.LeNet5()
    names = ("c1", "s2", "c3", "s4", "c5", "f6")
    shapes = {}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: shapes.update({n: i[0].shape[1:]}))
             for n in names]
    net(torch.randn(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    counted = {}
    for n in names:
        layer = copy.deepcopy(getattr(net, n))
        with torch.no_grad():
            for pname, p in layer.named_parameters():
                p.fill_(0.0 if pname == "bias" else 1.0)
            out = layer(torch.ones(1, *shapes[n]))
        counted[n] = int(out.sum()) + (out.numel() if getattr(layer, "bias", None) is not None else 0)
    # the RBF output: y_i depends on every F6 unit x_j through (x_j - w_ij)^2
    h = torch.randn(1, 84, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda x: lenet.rbf_penalties(x, net.codes), h)  # (1, 10, 1, 84)
    counted["output"] = int((jac != 0).sum())
    # LeCun et al. 1998, section II.B: C1 122,304; S2 5,880; C3 151,600; S4 2,000; C5 48,120 (= its parameters,
    # a full connection); F6 10,164 (= its parameters); the RBF layer: 84 inputs to each of 10 units
    assert counted == {"c1": 122304, "s2": 5880, "c3": 151600, "s4": 2000, "c5": 48120, "f6": 10164, "output": 840}
    assert sum(counted.values()) == 340908
    # the count sees the wiring: a full C3 has 6 x 16 kernels instead of Table I's 60
    full = lenet.LeNet5(c3="full").c3
    with torch.no_grad():
        full.weight.fill_(1.0)
        full.bias.zero_()
        assert int(full(torch.ones(1, 6, 14, 14)).sum()) + 1600 == 10 * 10 * (96 * 25 + 16)


def test_h2_sees_8_of_12_maps_and_each_h1_map_feeds_8():
    t = lenet.h2_table()
    assert t.sum(0).tolist() == [8] * 12 and t.sum(1).tolist() == [8] * 12
    assert len({tuple(col.tolist()) for col in t.t()}) == 12


@pytest.mark.parametrize("kw", [{}, dict(activation="relu"), dict(pool="max"), dict(c3="full"),
                                dict(output="softmax"), dict(activation="relu", pool="max", output="softmax")])
def test_lenet5_options_change_only_what_they_name(kw):
    torch.manual_seed(0)
    model = lenet.LeNet5(**kw)
    x = torch.randn(3, 1, 32, 32)
    h = model.features(x)
    assert h.shape == (3, 84)
    f = torch.relu if kw.get("activation") == "relu" else lenet.scaled_tanh
    c1 = f(model.c1(x))  # (3, 6, 28, 28)
    if kw.get("pool") == "max":  # a plain 2x2 max, no coefficient, bias or squashing
        torch.testing.assert_close(model.subsample(c1, "s2"), F.max_pool2d(c1, 2))
    else:  # the paper's S2: f(coefficient * (sum of 2x2) + bias)
        torch.testing.assert_close(model.subsample(c1, "s2"), f(model.s2(c1)))
    assert (h >= 0).all() if kw.get("activation") == "relu" else h.abs().max() <= lenet.A
    connected = model.c3.kernel().abs().sum((2, 3)) > 0  # (16, 6)
    assert torch.equal(connected, torch.ones(16, 6, dtype=torch.bool) if kw.get("c3") == "full"
                       else lenet.c3_table().t())
    if kw.get("output") == "softmax":  # a trained Linear(84, 10) for cross-entropy
        torch.testing.assert_close(model(x), model.head(h))
    else:  # the paper's RBF scores: minus the squared distance to each fixed code (eq. 7)
        torch.testing.assert_close(model(x), -lenet.rbf_penalties(h, lenet.rbf_codes()))


def test_lenet1989_shapes_background_padding_and_unit_biases():
    model = lenet.LeNet1989()
    x = torch.randn(2, 1, 16, 16)
    h1 = lenet.scaled_tanh(model.h1(x) + model.h1_bias)
    assert h1.shape == (2, 12, 8, 8) and model.h2(h1).shape == (2, 12, 4, 4)  # the 1989 paper: 12@8x8, 12@4x4
    assert model(x).shape == (2, 10) and model(x).abs().max() <= lenet.A
    # outside the 16x16 field the input is background (-1), as inside a blank image: a blank image gives every
    # H1 unit of a map the same total input, border units included (zero padding would make the border differ)
    blank = model.h1(-torch.ones(1, 1, 16, 16))
    torch.testing.assert_close(blank, blank[..., :1, :1].expand_as(blank))
    # each unit has its own bias (shared weights, unshared biases): one bias moves one unit only
    with torch.no_grad():
        model.h1_bias[3, 2, 5] += 1.0
    moved = (lenet.scaled_tanh(model.h1(x) + model.h1_bias) != h1).nonzero()[:, 1:].unique(dim=0)
    assert moved.tolist() == [[3, 2, 5]]


def test_lenet1989_connections_are_the_papers_64_660():
    """LeCun et al. 1989, section 3: 1,256 units, 64,660 connections, 9,760 free parameters. Counted from the
    layers: a copy with every weight 1 fed ones (and 'background' 1 beyond the edge) gives each unit its number of
    inputs; each unit's own bias adds one."""
    import copy
    model = lenet.LeNet1989()
    counted = {}
    for name, layer, shape in (("h1", model.h1, (1, 16, 16)), ("h2", model.h2, (12, 8, 8))):
        ones = copy.deepcopy(layer)
        ones.pad_value = 1.0
        with torch.no_grad():
            ones.weight.fill_(1.0)
        out = ones(torch.ones(1, *shape))
        counted[name] = int(out.sum()) + out.numel()  # + one bias per unit
    counted["h3"] = model.h3.weight.numel() + model.h3.bias.numel()  # fully connected
    counted["out"] = model.out.weight.numel() + model.out.bias.numel()
    assert counted == {"h1": 19_968, "h2": 38_592, "h3": 5_790, "out": 310}
    assert sum(counted.values()) == 64_660
    assert 12 * 8 * 8 + 12 * 4 * 4 + 30 + 10 + 16 * 16 == 1_256  # units, inputs included


def test_1989_criterion_is_half_the_squared_distance_to_plus_minus_one_targets():
    out = torch.tensor([[0.5, -1.0, 0.0], [1.0, 1.0, -0.5]])
    # targets: +1 for the class, -1 for the others (the 1989 paper's output code), E = 1/2 sum (out - d)^2
    by_hand = (0.5 * ((0.5 + 1) ** 2 + (-1.0 - 1) ** 2 + (0.0 + 1) ** 2)
               + 0.5 * ((1.0 + 1) ** 2 + (1.0 - 1) ** 2 + (-0.5 + 1) ** 2)) / 2
    torch.testing.assert_close(lenet.squared_error(out, torch.tensor([1, 1])), torch.tensor(by_hand))


def test_sparse_conv_is_the_sum_over_connected_maps_only():
    torch.manual_seed(0)
    conv = lenet.SparseConv2d(lenet.c3_table(), 5)
    x = torch.randn(2, 6, 14, 14)
    kernel = conv.kernel()
    assert torch.equal(kernel.abs().sum((2, 3)) > 0, lenet.c3_table().t())  # zero exactly where unconnected
    by_hand = torch.zeros(2, 16, 10, 10)
    for j in range(16):
        for i in range(6):
            if lenet.c3_table()[i, j]:
                by_hand[:, j] += F.conv2d(x[:, i:i + 1], kernel[j:j + 1, i:i + 1])[:, 0]
        by_hand[:, j] += conv.bias[j]
    torch.testing.assert_close(conv(x), by_hand, rtol=1e-5, atol=1e-5)


def test_subsampling_is_coefficient_times_2x2_sum_plus_bias():
    s = lenet.Subsampling(1)
    with torch.no_grad():
        s.coef.fill_(0.5)
        s.bias.fill_(-1.0)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]) * 0.5 - 1
    torch.testing.assert_close(s(x)[0, 0], expected)


def test_scaled_tanh_is_1_7159_tanh_of_two_thirds_a():
    # LeCun et al. 1998, eq. 6 and Appendix A: f(a) = A tanh(S a) with A = 1.7159 and S = 2/3, so f(+-1) = +-1
    assert (lenet.A, lenet.S) == (1.7159, 2 / 3)
    a = torch.linspace(-6, 6, 121)
    torch.testing.assert_close(lenet.scaled_tanh(a), 1.7159 * torch.tanh(2 / 3 * a))
    torch.testing.assert_close(lenet.scaled_tanh(torch.tensor([1.0, -1.0, 0.0])), torch.tensor([1.0, -1.0, 0.0]),
                               atol=2e-4, rtol=0)


def _within_lecun_bound(t: torch.Tensor, fan_in: int) -> None:
    """Uniform in [-2.4/F, 2.4/F]: nothing outside, and a tensor of 60+ (1,000+) values reaches past 90% (99%) of
    the bound, so a smaller range fails too."""
    bound = 2.4 / fan_in
    assert t.abs().max() <= bound * (1 + 1e-6), (fan_in, t.abs().max())
    if t.numel() >= 60:
        assert t.abs().max() >= (0.99 if t.numel() >= 1000 else 0.9) * bound, (fan_in, t.abs().max())


def test_initial_weights_are_uniform_in_2_4_over_the_fan_in():
    """LeCun et al. 1998, Appendix C: every weight and bias uniform in [-2.4/F_i, 2.4/F_i], F_i the number of
    inputs of the unit it feeds (model.py applies it to the 1989 net too)."""
    torch.manual_seed(0)
    net = lenet.LeNet5()
    for layer, fan_in in ((net.c1, 25), (net.c5, 400), (net.f6, 120), (net.s2, 4), (net.s4, 4)):
        for p in layer.parameters():
            _within_lecun_bound(p.detach(), fan_in)
    kernel, table = net.c3.kernel().detach(), lenet.c3_table()  # C3's fan-in differs per map: 3, 4 or 6 maps
    for j in range(16):
        fan_in = int(table[:, j].sum()) * 25
        _within_lecun_bound(kernel[j][table[:, j]], fan_in)
        _within_lecun_bound(net.c3.bias[j:j + 1].detach(), fan_in)
    old = lenet.LeNet1989()
    for p, fan_in in ((old.h1.kernel(), 25), (old.h1_bias, 25), (old.h2.kernel()[old.h2.kernel() != 0], 200),
                      (old.h2_bias, 200), (old.h3.weight, 192), (old.h3.bias, 192), (old.out.weight, 30),
                      (old.out.bias, 30)):
        _within_lecun_bound(p.detach(), fan_in)


def test_rbf_codes_are_fixed_plus_minus_one_bitmaps():
    codes = lenet.rbf_codes()
    assert codes.shape == (10, 84) and set(codes.unique().tolist()) == {-1.0, 1.0}
    assert "codes" in dict(lenet.LeNet5().named_buffers()) and count_params(lenet.LeNet5()) == 60000
    assert (torch.cdist(codes, codes, p=0) + 99 * torch.eye(10)).min() >= 8  # every pair differs in 8+ pixels


def test_rbf_penalty_and_map_loss_on_a_hand_computed_example():
    codes = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    h = torch.tensor([[0.5, -1.0]])
    y = lenet.rbf_penalties(h, codes)  # (0.5-1)^2 + 0, (1.5)^2 + (2)^2, (0.5)^2 + (2)^2
    torch.testing.assert_close(y, torch.tensor([[0.25, 6.25, 4.25]]))
    j = 1.0
    loss = lenet.map_loss(-y, torch.tensor([0]), j)
    expected = 0.25 + torch.log(torch.exp(torch.tensor(-j)) + torch.exp(-y).sum())
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(lenet.mse_criterion(-y, torch.tensor([2])), torch.tensor(4.25))


def test_inputs_are_the_papers_sizes_and_scales():
    x = torch.zeros(5, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 10:18, 10:18] = 255
    padded = inputs.pad_to_32(x)  # 1998, section III.A: the 28x28 digit centred in a 32x32 field
    assert padded.shape == (5, 1, 32, 32) and torch.equal(padded[..., 2:30, 2:30], x)
    assert int(padded.sum()) == int(x.sum())  # 2 pixels of background on every side
    small = inputs.shrink_to_16(x)
    assert small.shape == (5, 1, 16, 16) and small.dtype == torch.uint8 and small.max() == 255
    torch.testing.assert_close(inputs.scale_1998(torch.tensor([0.0, 1.0])), torch.tensor([-0.1, 1.175]))
    torch.testing.assert_close(inputs.scale_1989(torch.tensor([0.0, 1.0])), torch.tensor([-1.0, 1.0]))


def test_distortions_are_random_affine_maps_and_vanish_at_zero_range():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 32, 32)
    same = inputs.distort(x, shift=0, scale=0, squeeze=0, shear=0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    moved = inputs.distort(x)
    assert moved.shape == x.shape and (moved - x).abs().mean() > 0.05
    one = torch.zeros(1, 1, 32, 32)
    one[..., 16, 16] = 1
    shifted = inputs.distort(one, shift=2, scale=0, squeeze=0, shear=0)
    assert torch.isclose(shifted.sum(), torch.tensor(1.0), atol=1e-4)  # a pure shift keeps the ink


def test_gauss_newton_diagonal_is_exact_for_one_output():
    lin = torch.nn.Linear(3, 1, bias=False)
    x = torch.randn(50, 3)
    (h,) = sdlm.gauss_newton_diagonal(lin, [lin.weight], x, c=2.0)
    torch.testing.assert_close(h, 2 * x.pow(2).mean(0, keepdim=True))  # dz/dw = x


def test_sdlm_step_is_eta_over_mu_plus_h():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = sdlm.SDLM([w], lr=0.1, mu=0.5)
    opt.set_curvature([torch.tensor([0.5, 1.5])])
    w.grad = torch.tensor([2.0, 2.0])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([1 - 0.1 * 2 / 1.0, 1 - 0.1 * 2 / 2.0]))


def test_lenet5_overfits_one_batch_of_real_digits(data_root):
    from common import data
    x, y = data.load("mnist", data_root)["train"]
    x = inputs.scale_1998(inputs.pad_to_32(x[:64]).float() / 255)
    y = y[:64]
    torch.manual_seed(0)
    model = lenet.LeNet5()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(90):
        loss = lenet.map_loss(model(x), y, 10.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1  # eq. 9 near its floor: F6 sits on the right code
    assert (model(x).argmax(1) == y).all()


def _smoke(tmp_path, *flags):
    return train.main(["--preset", "smoke", "--out-dir", str(tmp_path), *flags])


def built(monkeypatch, argv) -> dict:
    """What `train.main(argv)` builds for its (first) training loop (conftest.built). Nothing is trained."""
    return conftest_built(monkeypatch, train, train.main, argv)


# LeCun et al. 1998, Appendix C: eta 0.0005 for the first two passes, 0.0002 for the next three, 0.0001 for the
# next three, 0.00005 for the next four and 0.00001 thereafter, over 20 passes
ETA_1998 = [0.0005] * 2 + [0.0002] * 3 + [0.0001] * 3 + [0.00005] * 4 + [0.00001] * 8


def test_lenet5_paper_preset_is_appendix_c_through_the_real_code_path(tmp_path, data_root, monkeypatch):
    got = built(monkeypatch, ["--preset", "paper", "--out-dir", str(tmp_path)])
    cfg, model, opt, sched = got["cfg"], got["model"], got["opt"], got["sched"]
    assert isinstance(model, lenet.LeNet5) and lenet.is_faithful(model) and cfg.criterion == "map"  # eq. 9
    assert not cfg.distort  # the 0.95% of Fig. 9 is without distortions
    # stochastic diagonal Levenberg-Marquardt, mu = 0.02 (Appendix C), one pattern per update, 20 passes
    assert type(opt) is sdlm.SDLM and opt.param_groups[0]["mu"] == 0.02
    assert cfg.batch_size == 1 and got["per_epoch"] == 60_000 and got["total"] == 20 * 60_000
    eta = opt.param_groups[0]["lr"]  # the base rate; the schedule scales it pass by pass
    for p, want in enumerate(ETA_1998):
        for step in (p * 60_000, (p + 1) * 60_000 - 1):  # the first and last update of pass p + 1
            assert eta * sched.lr_lambdas[0](step) == pytest.approx(want, rel=1e-12), (p, step)
    assert train.PAPER_ETA == ETA_1998
    assert (cfg.mu, cfg.hessian_samples) == (0.02, 500)  # Appendix C: h_kk re-estimated on 500 patterns


@pytest.mark.parametrize("experiment, c", [("lenet5", 2.0), ("lenet1989", 1.0)])
def test_sdlm_curvature_is_estimated_on_500_patterns_before_the_first_pass(experiment, c, tmp_path, data_root,
                                                                           monkeypatch):
    """Appendix C: the Hessian diagonal is estimated on 500 patterns before each pass; d^2E/dz^2 is 2 for the RBF
    penalty |z - code|^2 (z: F6's state) and 1 for the 1989 net's 1/2 |out - d|^2 (z: its outputs)."""
    seen = []

    def record(outputs, params, x, curvature):
        seen.append((len(x), curvature, getattr(outputs, "__name__", type(outputs).__name__)))
        raise Built

    monkeypatch.setattr(train, "gauss_newton_diagonal", record)
    with pytest.raises(Built):
        train.main(["--experiment", experiment, "--preset", "paper", "--out-dir", str(tmp_path)])
    assert seen == [(500, c, "features" if experiment == "lenet5" else "LeNet1989")]


def test_lenet1989_paper_preset_is_23_passes_one_pattern_at_a_time(tmp_path, data_root, monkeypatch):
    got = built(monkeypatch, ["--experiment", "lenet1989", "--preset", "paper", "--out-dir", str(tmp_path)])
    # LeCun et al. 1989, section 5: the weights updated after each pattern, 23 passes through the training set
    assert isinstance(got["model"], lenet.LeNet1989) and type(got["opt"]) is sdlm.SDLM
    assert got["cfg"].batch_size == 1 and got["total"] == 23 * got["per_epoch"] == 23 * 60_000
    assert got["sched"].lr_lambdas[0](got["total"] - 1) == 1.0  # the paper gives no schedule: constant


def test_paper_values_are_the_papers_errors():
    cfg = train.Config()
    assert train.paper_value(cfg, lenet.LeNet5())[0] == 0.0095  # LeCun et al. 1998, Fig. 9: 0.95%
    assert train.paper_value(train.Config(distort=True), lenet.LeNet5())[0] == 0.008  # with distortions: 0.8%
    assert train.paper_value(train.Config(experiment="lenet1989"), lenet.LeNet1989())[0] == 0.05  # 1989: 5.0%
    assert train.paper_value(cfg, lenet.LeNet5(pool="max"))[0] is None  # not the paper's net: no paper value


def _test_error_of_checkpoint(run, model, fit, scale, data_root) -> float:
    """The final checkpoint's test error, recomputed here from the MNIST test files in the model's input format."""
    from common import data
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    x, y = data.load("mnist", data_root)["test"]
    with torch.no_grad():
        pred = torch.cat([model.eval()(scale(fit(x[i:i + 2000]).float() / 255)).argmax(1)
                          for i in range(0, 10000, 2000)])
    return (pred != y).float().mean().item()


def test_smoke_run_writes_the_full_run_record_and_figures(tmp_path, data_root):
    card = _smoke(tmp_path)
    run = only_run_dir(tmp_path, "02_cnn_lenet")
    files = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "kernels.png", "feature_maps.png",
            "mistakes.png", "mistakes.txt", "rbf_codes.png"} <= files
    from common.logging import SUMMARY_KEYS
    summary = read_summary(run)
    assert set(SUMMARY_KEYS) <= set(summary) and summary == json.loads(json.dumps(card))
    assert summary["params"] == 60000 and summary["steps"] == 20 and summary["paper_value"] == 0.0095
    # the reported error is the final net's on all 10,000 test digits, padded to 32x32 and scaled to -0.1 / 1.175
    err = _test_error_of_checkpoint(run, lenet.LeNet5(), inputs.pad_to_32, inputs.scale_1998, data_root)
    assert summary["value"] == pytest.approx(err, abs=1e-4)
    assert summary["test_errors_count"] == round(summary["value"] * 10000)
    assert {"train", "test"} == {r["split"] for r in read_metrics(run)}
    assert (run / "kernels.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("flags, params", [(["--experiment", "lenet1989"], 9760), (["--experiment", "mlp"], 59635)])
def test_other_models_smoke(tmp_path, data_root, flags, params):
    card = _smoke(tmp_path, *flags, "--steps", "8")
    assert card["params"] == params
    # each net is scored on its own input format: 16x16 in [-1, 1] (1989), 28x28 in [0, 1] (the MLP)
    model, fit, scale = ((lenet.LeNet1989(), inputs.shrink_to_16, inputs.scale_1989) if "lenet1989" in flags else
                         (train.MLP([784, 75, 10], "relu"), lambda x: x, lambda x: x))
    err = _test_error_of_checkpoint(only_run_dir(tmp_path, "02_cnn_lenet"), model, fit, scale, data_root)
    assert card["value"] == pytest.approx(err, abs=1e-4)


def test_sdlm_paper_recipe_with_distortions_and_bf16_runs(tmp_path, data_root):
    card = _smoke(tmp_path, "--optimizer", "sdlm", "--schedule", "paper", "--lr", "0.0005", "--batch-size", "1",
                  "--hessian-samples", "20", "--distort", "--precision", "bf16", "--steps", "30")
    assert card["precision"] == "bf16" and card["options"]["optimizer"] == "sdlm" and card["model"].endswith("-distort")
    state = torch.load(only_run_dir(tmp_path, "02_cnn_lenet") / "checkpoint.pt", weights_only=True)
    assert all("h" in s for s in state["optimizer"]["state"].values())  # curvature is saved for resuming


@pytest.mark.parametrize("args, message", [
    (["--pool", "avg"], "invalid choice"),
    (["--experiment", "mlp", "--pool", "max"], "--pool is for --experiment lenet5, not mlp"),
    (["--optimizer", "sdlm", "--output", "softmax"], "--optimizer sdlm needs a squared-error output"),
    (["--experiment", "mlp", "--mlp-hidden", "ten"], "--mlp-hidden takes positive layer sizes"),
    (["--threads", "-1"], "--threads must be >= 0"),
])
def test_bad_input_is_a_clear_message_not_a_traceback(args, message, tmp_path):
    r = run_cli("train", "02_cnn_lenet", "--preset", "smoke", *args, "--out-dir", tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_modern_lenet5_keeps_the_layout_and_counts_its_parameters():
    model = lenet.LeNet5Modern()
    assert count_params(model) == 61728  # LeNet5(relu, max, full C3, softmax) 61,706 - 22 conv biases + 44 BN
    reference = lenet.LeNet5("relu", "max", "full", "softmax")
    assert count_params(reference) == 61706
    x = torch.randn(5, 1, 32, 32)
    assert model(x).shape == (5, 10)
    assert model.c1(x).shape == reference.c1(x).shape == (5, 6, 28, 28)
    h = F.max_pool2d(model.c1(x), 2)
    assert model.c3(h).shape == (5, 16, 10, 10)


def test_onecycle_is_commons_one_cycle():  # its shape is tested in test_common
    from common.loop import one_cycle
    f, g = train.lr_factor("onecycle", 100, 10), one_cycle(100)
    assert [f(s) for s in range(101)] == [g(s) for s in range(101)] and f(25) == 1.0


def test_fast_preset_runs_the_race_and_records_its_clock(tmp_path, data_root):
    card = train.main(["--preset", "fast", "--out-dir", str(tmp_path), "--steps", "20", "--batch-size", "64",
                       "--lr", "0.1", "--eval-every", "10", "--log-every", "5", "--ckpt-every", "10", "--threads", "1"])
    assert card["params"] == 61728 and card["experiment"] == "fast" and card["preset"] == "fast"
    assert card["value"] < 0.9
    assert card["options"] == dict(distort=False, optimizer="sgd", nesterov=True, schedule="onecycle")
    # process start -> the test error is known: after the training, before the figures and the card
    assert card["train_seconds"] < card["seconds_to_result"] <= card["wall_seconds"]


def test_fast_preset_is_the_race_recipe_and_the_only_way_to_it():
    from common.config import parse_config
    cfg = parse_config(train.Config, ["--preset", "fast"], train.PRESETS, experiments=train.EXPERIMENTS)
    # the recipe `--experiment fast` ran before it became `--preset fast`, value for value
    assert (cfg.experiment, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay,
            cfg.schedule, cfg.precision) == ("fast", 3, 256, 0.4, 0.9, True, 5e-4, "onecycle", "auto")
    for argv, says in ((["--experiment", "fast"], "--preset fast"), (["--preset", "fast", "--experiment", "mlp"],
                                                                     "takes no other --experiment")):
        with pytest.raises(UserError, match=says):
            parse_config(train.Config, argv, train.PRESETS, experiments=train.EXPERIMENTS)
