"""04_resnet: the paper's CIFAR and ImageNet ResNets (parameter counts, multiply-adds, shortcuts), the
residual equation, the recipe's schedule, and the training / degradation-experiment CLI."""

import ast
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.data.cifar import MEAN, STD
from tests.conftest import REPO, only_run_dir, read_metrics, read_summary, run_cli
from tests.conftest import built as conftest_built

M = importlib.import_module("milestones.04_resnet.model")
R = importlib.import_module("milestones.04_resnet.recipe")
T = importlib.import_module("milestones.04_resnet.train")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cifar_params_by_hand(depth: int) -> int:
    """Worked out on paper from section 4.2, not by walking a model: a 3x3 conv c_in -> c without bias costs
    9 c_in c, its BN 2c (gamma, beta); option A shortcuts cost nothing; n = (depth - 2) / 6 blocks a stage.
        first conv 3 -> 16                                 9*3*16 + 32                      =     464
        stage 1: 2n convs 16 -> 16                         2n (2,304 + 32)                  =   4,672 n
        stage 2: one 16 -> 32, 2n - 1 of 32 -> 32          4,672 + (2n - 1) 9,280
        stage 3: one 32 -> 64, 2n - 1 of 64 -> 64          18,560 + (2n - 1) 36,992
        fc 64 -> 10                                        650
    Summed: 97,216 n - 21,926."""
    n = (depth - 2) // 6
    return 97_216 * n - 21_926


# Table 6 of the paper: parameter counts rounded to its last digit (0.27M: within 0.005M of 0.27M)
@pytest.mark.parametrize("depth, paper_millions, last_digit", [
    (20, 0.27, 0.01), (32, 0.46, 0.01), (44, 0.66, 0.01), (56, 0.85, 0.01), (110, 1.7, 0.1)])
def test_cifar_parameter_counts_match_table_6(depth, paper_millions, last_digit):
    count = n_params(M.resnet_cifar(depth))
    assert count == cifar_params_by_hand(depth)
    assert abs(count / 1e6 - paper_millions) <= last_digit / 2, count
    assert n_params(M.resnet_cifar(depth, "plain")) == count  # option A adds no parameters to the plain net


def cifar_params_at_width(depth: int, w: int) -> int:
    """The same count for stages of w / 2w / 4w filters (a 3x3 conv c_in -> c costs 9 c_in c + 2c with its BN):
        first conv 29 w;  stage 1: 2n (9 w^2 + 2 w);  stage 2: 18 w^2 + 4 w + (2n - 1)(36 w^2 + 4 w)
        stage 3: 72 w^2 + 8 w + (2n - 1)(144 w^2 + 8 w);  fc 40 w + 10"""
    n = (depth - 2) // 6
    return (29 * w + 2 * n * (9 * w * w + 2 * w) + 18 * w * w + 4 * w + (2 * n - 1) * (36 * w * w + 4 * w)
            + 72 * w * w + 8 * w + (2 * n - 1) * (144 * w * w + 8 * w) + 40 * w + 10)


@pytest.mark.parametrize("width", [4, 8, 16, 24])
@pytest.mark.parametrize("depth", [20, 56])
def test_width_sets_every_stage_and_the_parameter_count(depth, width):
    net = M.build(f"resnet{depth}", width=width)
    assert n_params(net) == cifar_params_at_width(depth, width) == n_params(M.build(f"plain{depth}", width=width))
    assert [net.blocks[i].conv2[0].out_channels for i in (0, len(net.blocks) // 2, -1)] == [width, 2 * width,
                                                                                          4 * width]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    if width == 16:  # the paper's widths are the default
        assert n_params(M.build(f"resnet{depth}")) == cifar_params_by_hand(depth) == n_params(net)


def test_table_6_depths_are_6n_plus_2_with_the_papers_n():
    for depth, n in ((20, 3), (32, 5), (44, 7), (56, 9), (110, 18), (1202, 200)):
        assert M.cifar_blocks_per_stage(depth) == n
        if depth < 1202:  # 1202 is counted below
            net = M.resnet_cifar(depth)
            assert len(net.blocks) == 3 * n
            assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules()) == depth  # weighted layers


def test_option_a_shortcuts_have_no_parameters_and_are_identities_where_shapes_match():
    net = M.resnet_cifar(20, "A")
    assert all(sum(p.numel() for p in b.shortcut.parameters()) == 0 and not list(b.shortcut.buffers())
               for b in net.blocks)
    x = torch.randn(2, 16, 8, 8)
    same = [b for b in net.blocks if b.conv1[0].in_channels == b.conv2[0].out_channels
            and b.conv1[0].stride == (1, 1)]
    assert len(same) == 7  # all but the first block of stages 2 and 3
    for b in same[:3]:
        assert b.shortcut(x) is x  # the identity itself, not a copy or a learned map
    # option B: projections exactly where the shape changes, 1x1 conv + BN: 16 -> 32 and 32 -> 64
    assert n_params(M.resnet_cifar(20, "B")) - n_params(net) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_resnet_1202_is_1202_layers_and_19_4_million_parameters():
    net = M.resnet_cifar(1202)  # n = 200: about 2 s to build
    assert len(net.blocks) == 3 * 200
    weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 1202  # first conv + 2 per block + fc (option A shortcuts have no layers)
    assert n_params(net) == cifar_params_by_hand(1202)
    assert abs(n_params(net) / 1e6 - 19.4) <= 0.05  # Table 6: 19.4M


@pytest.mark.parametrize("depth, params, gmacs", [
    (18, 11_689_512, 1.8), (34, 21_797_672, 3.6), (50, 25_557_032, 3.8), (101, 44_549_160, 7.6),
    (152, 60_192_808, 11.3)])
def test_imagenet_params_and_multiply_adds_match_table_1(depth, params, gmacs):
    net = M.resnet_imagenet(depth)
    assert n_params(net) == params  # the same counts as torchvision's models
    macs = M.count_multiply_adds(net, (1, 3, 224, 224))
    assert abs(macs / 1e9 - gmacs) / gmacs < 0.025, macs  # Table 1 rounds (our 3.66 / 3.86 are its 3.6 / 3.8)


def test_multiply_add_counter_against_a_hand_count():
    """ResNet-20 on 32x32: every 3x3 conv's output pixels x 9 x C_in, plus the fc layer."""
    by_hand = 32 * 32 * 16 * 27 + 6 * 32 * 32 * 16 * 144  # first conv, stage 1
    by_hand += 16 * 16 * 32 * 144 + 5 * 16 * 16 * 32 * 288  # stage 2 (first conv reads 16 channels)
    by_hand += 8 * 8 * 64 * 288 + 5 * 8 * 8 * 64 * 576 + 640  # stage 3, fc
    assert M.count_multiply_adds(M.resnet_cifar(20), (1, 3, 32, 32)) == by_hand
    # each step of n adds one block (two 3x3 convs) to every stage: ResNet-56 is n = 9, six more than ResNet-20
    per_n = 2 * 9 * (32 * 32 * 16 * 16 + 16 * 16 * 32 * 32 + 8 * 8 * 64 * 64)
    assert M.count_multiply_adds(M.resnet_cifar(56), (1, 3, 32, 32)) == by_hand + 6 * per_n


def test_shapes_through_the_stages():
    net = M.resnet_cifar(20).eval()
    x = torch.randn(2, 3, 32, 32)
    h = net.stem(x)
    assert h.shape == (2, 16, 32, 32)
    assert net.blocks[:3](h).shape == (2, 16, 32, 32) and net.blocks[:6](h).shape == (2, 32, 16, 16)
    assert net.blocks(h).shape == (2, 64, 8, 8) and net(x).shape == (2, 10)
    assert M.resnet_imagenet(18).eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_shortcuts_are_identities_where_the_paper_says():
    a = M.resnet_cifar(20, "A").blocks
    assert [type(b.shortcut).__name__ for b in a] == ["Identity"] * 3 + ["ZeroPadShortcut"] + ["Identity"] * 2 + \
        ["ZeroPadShortcut"] + ["Identity"] * 2
    b = M.resnet_cifar(20, "B").blocks
    assert [isinstance(b_.shortcut, nn.Sequential) for b_ in b] == [False] * 3 + [True] + [False] * 2 + [True] + [False] * 2
    assert all(isinstance(b_.shortcut, nn.Sequential) for b_ in M.resnet_cifar(20, "C").blocks)
    assert all(b_.shortcut is None for b_ in M.resnet_cifar(20, "plain").blocks)
    r50 = M.resnet_imagenet(50).blocks  # option B: projection at the first block of each stage only
    assert [i for i, b_ in enumerate(r50) if isinstance(b_.shortcut, nn.Sequential)] == [0, 3, 7, 13]


def test_zero_padding_shortcut_subsamples_and_appends_zero_channels():
    x = torch.randn(2, 16, 32, 32)
    y = M.ZeroPadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and torch.equal(y[:, 16:], torch.zeros(2, 16, 16, 16))


def test_block_computes_relu_of_residual_plus_x():
    torch.manual_seed(0)
    block = M.BasicBlock(16, 16).eval()
    nn.init.normal_(block.conv2[1].bias)  # nonzero beta so the residual is not trivially small
    x = torch.randn(2, 16, 8, 8)
    c1, bn1, c2, bn2 = block.conv1[0], block.conv1[1], block.conv2[0], block.conv2[1]
    f = bn2(F.conv2d(F.relu(bn1(F.conv2d(x, c1.weight, padding=1))), c2.weight, padding=1))  # F(x)
    torch.testing.assert_close(block(x), F.relu(f + x))  # y = relu(F(x) + x), eq. 1


@pytest.mark.parametrize("block", [M.BasicBlock(32, 32), M.Bottleneck(256, 64)])
def test_zeroed_residual_branch_is_the_identity(block):
    last = block.conv3 if isinstance(block, M.Bottleneck) else block.conv2
    nn.init.zeros_(last[1].weight)
    nn.init.zeros_(last[1].bias)  # F(x) = 0
    x = torch.rand(2, block.conv1[0].in_channels, 8, 8)  # non-negative, as after the previous block's ReLU
    assert torch.equal(block.train()(x), x) and torch.equal(block.eval()(x), x)


def test_zero_init_residual_makes_every_identity_block_pass_its_input():
    net = M.resnet_cifar(20)
    net.reset_parameters(zero_init_residual=True)
    h = net.stem(torch.randn(4, 3, 32, 32))
    assert torch.equal(net.blocks[:3](h), h)  # stage 1: identity shortcuts, zero branches
    net.reset_parameters()
    assert not torch.equal(net.blocks[:3](h), h)


def test_he_init_and_no_conv_bias():
    torch.manual_seed(0)
    net = M.resnet_cifar(56)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs) and len(convs) == 55
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert n_bn == len(convs)  # BN after every conv
    # He et al. 2015 (section 4.2 cites "Delving deep into rectifiers", eq. 10): zero-mean Gaussian, std sqrt(2/n),
    # n = k^2 c the fan-IN. Stage 3's first conv (32 -> 64) tells fan-in (n = 288) from fan-out (n = 576)
    w = net.blocks[2 * 9].conv1[0].weight
    assert w.shape == (64, 32, 3, 3)
    assert abs(w.std().item() / (2 / 288) ** 0.5 - 1) < 0.03  # 18,432 draws: within 3%
    assert abs(w.mean().item()) < 0.003
    z = (w / (2 / 288) ** 0.5).abs()
    assert z.max() > 3.5  # Gaussian tails: a uniform of the same std never passes sqrt(3) = 1.73
    assert abs((z < 1).float().mean().item() - 0.6827) < 0.02  # 68% within one std, as a normal has
    last = net.blocks[-1].conv2[0].weight  # 64 -> 64: n = 576
    assert abs(last.std().item() / (2 / 576) ** 0.5 - 1) < 0.03
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):  # BN starts as the identity map
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_batch_norm_is_ioffe_and_szegedys_transform():
    """Ioffe & Szegedy 2015, Algorithm 1: in training, each channel normalised by its mini-batch mean and biased
    variance (1/m), then scaled by gamma and shifted by beta; Algorithm 2: inference uses population statistics,
    with the variance estimated unbiased (m/(m-1) times the batch variance). The paper gives no number for eps or
    for how the averages are kept; the nets use PyTorch's eps 1e-5 and running-average momentum 0.1, pinned here
    so that a change is deliberate."""
    torch.manual_seed(0)
    bn = M.resnet_cifar(20).stem[0][1]
    assert isinstance(bn, nn.BatchNorm2d) and (bn.eps, bn.momentum, bn.affine) == (1e-5, 0.1, True)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    x = torch.randn(8, 16, 5, 5) * 3 + 1
    y = bn.train()(x)
    mu, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    w, b = bn.weight.view(1, -1, 1, 1), bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(y, w * (x - mu) / torch.sqrt(var + 1e-5) + b, rtol=1e-4, atol=1e-5)
    m = 8 * 5 * 5
    torch.testing.assert_close(bn.running_var, 0.9 * 1 + 0.1 * var.flatten() * m / (m - 1))
    torch.testing.assert_close(bn.running_mean, 0.1 * mu.flatten())
    x2 = torch.randn(3, 16, 5, 5)  # eval: the population statistics, whatever the batch holds
    torch.testing.assert_close(bn.eval()(x2), w * (x2 - bn.running_mean.view(1, -1, 1, 1))
                               / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 1e-5) + b)


def test_paper_errors_are_table_6s():
    # He et al. 2015, Table 6 (CIFAR-10 test error, %): 8.75, 7.51, 7.17, 6.97, 6.43 (ResNet-110, best of 5), 7.93
    assert T.PAPER_ERROR == {"resnet20": 0.0875, "resnet32": 0.0751, "resnet44": 0.0717, "resnet56": 0.0697,
                             "resnet110": 0.0643, "resnet1202": 0.0793}


def built(monkeypatch, argv) -> dict:
    """What `train.main(argv)` builds for its (first) training loop (conftest.built). Nothing is trained."""
    return conftest_built(monkeypatch, R, T.main, argv)


@pytest.mark.parametrize("experiment, model", [("cifar", "resnet20"), ("cifar", "resnet110"),
                                               ("degradation", "plain20")])
def test_paper_preset_builds_section_4_2s_optimiser_and_schedule(experiment, model, tmp_path, data_root,
                                                                 monkeypatch):
    """He et al. 2015, section 4.2: "weight decay of 0.0001 and momentum of 0.9 ... mini-batch size of 128 ...
    start with a learning rate of 0.1, divide it by 10 at 32k and 48k iterations, and terminate training at 64k";
    for ResNet-110, 0.01 until the training error is below 80% ("about 400 iterations"), then 0.1."""
    flags = ["--model", model] if experiment == "cifar" else []
    got = built(monkeypatch, ["--experiment", experiment, "--preset", "paper", *flags, "--out-dir", str(tmp_path)])
    net, opt, sched, cfg = got["model"], got["opt"], got["sched"], got["cfg"]
    assert n_params(net) == cifar_params_by_hand(int(model[-3:] if model.endswith("110") else model[-2:]))
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())  # "BN ... but with no dropout"
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 1  # one group: decay on every weight
    g = opt.param_groups[0]
    assert {id(p) for p in g["params"]} == {id(p) for p in net.parameters()}
    assert (g["momentum"], g["weight_decay"], g["nesterov"], g["dampening"]) == (0.9, 1e-4, False, 0)
    assert cfg.batch_size == 128 and got["total"] == 64_000 and got["per_epoch"] == 50_000 // 128
    warm = 400 if model == "resnet110" else 0
    lr = {s: g["initial_lr"] * sched.lr_lambdas[0](s) for s in (0, warm - 1, warm, 31_999, 32_000, 47_999, 48_000,
                                                                 63_999) if s >= 0}
    want = {0: 0.01 if warm else 0.1, warm - 1: 0.01, warm: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01,
            48_000: 0.001, 63_999: 0.001}
    assert lr == pytest.approx({s: want[s] for s in lr}, rel=1e-12)
    # 4-pixel pad + crop + flip on; tested on the single original view of all 10,000 test images; fp32
    assert (cfg.augment, cfg.flip_test, cfg.test_size, cfg.label_smoothing, cfg.precision) == (True, False, 0, 0.0,
                                                                                                 "fp32")


def test_training_augmentation_is_4_pixel_pad_random_crop_and_flip(tmp_path, data_root, monkeypatch):
    """He et al. 2015, section 4.2 (following Lee et al. 2015): "4 pixels are padded on each side, and a 32x32
    crop is randomly sampled from the padded image or its horizontal flip"; test images are used as they are."""
    from common.data import augment
    calls = []

    def crop(x, size, padding=0, **kw):
        calls.append(("crop", size, padding))
        return augment.random_crop(x, size, padding, **kw)

    def flip(x, **kw):
        calls.append(("flip", kw.get("p", 0.5)))
        return augment.random_hflip(x, **kw)

    monkeypatch.setattr(R, "random_crop", crop)
    monkeypatch.setattr(R, "random_hflip", flip)
    T.main(["--preset", "smoke", "--steps", "2", "--eval-every", "2", "--out-dir", str(tmp_path)])
    assert calls == [("crop", 32, 4), ("flip", 0.5)] * 2  # each training batch, once; evaluation: never
    # what those two calls do: every shift of -4..4 pixels each way, each image mirrored with probability 1/2
    g = torch.Generator().manual_seed(0)
    dot = torch.zeros(4000, 1, 32, 32)
    dot[:, :, 10, 20] = 1
    moved = augment.random_crop(dot, 32, padding=4, generator=g).flatten(1).argmax(1)
    shifts = {(int(i) // 32 - 10, int(i) % 32 - 20) for i in moved}
    assert shifts == {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)}
    flipped = augment.random_hflip(dot, generator=g)[:, 0, 10, 32 - 1 - 20] == 1
    assert 0.47 < flipped.float().mean().item() < 0.53


@pytest.mark.parametrize("depth", [21, 19, 2, 0])
def test_depth_not_6n_plus_2_is_refused(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        M.resnet_cifar(depth)


def test_paper_schedule_and_warm_up():
    lam = R.lr_lambda(64000, [0.5, 0.75], 0)
    assert [lam(s) for s in (0, 31999, 32000, 47999, 48000, 63999)] == [1, 1, 0.1, 0.1, 0.1 ** 2, 0.1 ** 2]
    cfg = T.Config()
    assert R.warmup_for("resnet110", cfg) == 400 and R.warmup_for("resnet56", cfg) == 0
    warm = R.lr_lambda(64000, [0.5, 0.75], 400)
    assert warm(399) == 0.1 and warm(400) == 1  # 0.01 = 0.1 x 0.1, then back to 0.1


@pytest.mark.parametrize("experiment", ["cifar", "degradation"])
def test_paper_presets_are_section_4_2s_recipe(experiment):
    from common.config import parse_config
    cfg = parse_config(T.Config, ["--experiment", experiment, "--preset", "paper"], T.PRESETS,
                       experiments=T.EXPERIMENTS)
    # SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, /10 at 32k and 48k, stop at 64k; option A; fp32
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.steps) == (0.1, 0.9, 1e-4, 128, 64000)
    lam = R.lr_lambda(cfg.steps, R.parse_drops(cfg.lr_drops), 0)
    assert [s for s in range(1, cfg.steps) if lam(s) < lam(s - 1)] == [32000, 48000] and lam(0) == 1
    assert (cfg.shortcut, cfg.augment, cfg.zero_init_residual, cfg.precision) == ("A", True, False, "fp32")
    # warm-up 0.01 for 400 iterations for ResNet-110 only ("about 400 iterations", section 4.2)
    assert cfg.warmup_steps == -1 and R.warmup_for("resnet110", cfg) == 400 and R.warmup_for("plain56", cfg) == 0


def test_degradation_quick_preset_is_the_one_notes_describes():
    from common.config import parse_config
    cfg = parse_config(T.Config, ["--experiment", "degradation", "--preset", "quick"], T.PRESETS,
                       experiments=T.EXPERIMENTS)
    # the paper's recipe (SGD 0.1, momentum 0.9, wd 1e-4, augmentation, option A; batch 64 here, the paper 128),
    # bf16 where native, channels_last
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.1, 0.9, 1e-4, 64)
    assert (cfg.shortcut, cfg.augment, cfg.zero_init_residual, cfg.precision) == ("A", True, False, "auto")
    assert cfg.channels_last is True
    # ... its schedule shape (/10 at 50% and 75%) in 4,000 steps, 0.01 for the first 60, at widths 4/8/16
    lam = R.lr_lambda(cfg.steps, R.parse_drops(cfg.lr_drops), R.warmup_for("plain20", cfg))
    assert [s for s in range(1, cfg.steps) if lam(s) != lam(s - 1)] == [60, 2000, 3000] and lam(0) == 0.1
    assert (cfg.steps, cfg.width, R.warmup_for("resnet56", cfg)) == (4000, 4, 60)
    assert cfg.models == "plain20,plain56,resnet20,resnet56"
    notes = " ".join((REPO / "milestones" / "04_resnet" / "NOTES.md").read_text().split())  # lines joined
    assert "4,000 steps of 64 each (5.12 epochs), at a quarter of the paper's widths (`--width 4`: 4/8/16" in notes
    assert "LR 0.01 for 60 steps, then 0.1, divided by 10 at steps 2,000 and 3,000" in notes


def test_fast_preset_is_resnet20_unchanged_with_a_one_cycle_recipe(tmp_path, data_root):
    """The CIFAR race changes the recipe, never the net: ResNet-20 (option A, width 16: 0.27M parameters as Table
    6), and the optimiser actually built for it follows one-cycle with Nesterov momentum."""
    from common.config import parse_config
    from common.loop import one_cycle
    cfg = parse_config(T.Config, ["--preset", "fast"], T.PRESETS, experiments=T.EXPERIMENTS)
    assert (cfg.model, cfg.shortcut, cfg.width, cfg.schedule, cfg.nesterov) == ("resnet20", "A", 16, "onecycle", True)
    assert (cfg.precision, cfg.channels_last, cfg.augment, cfg.flip_test) == ("auto", True, True, True)
    assert sum(p.numel() for p in R.make_model(cfg.model, cfg).parameters()) == 269_722
    T.main(["--preset", "smoke", "--schedule", "onecycle", "--nesterov", "--lr", "0.2", "--out-dir", str(tmp_path)])
    state = torch.load(only_run_dir(tmp_path, "04_resnet") / "checkpoint.pt", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert group["nesterov"] is True and group["lr"] == pytest.approx(0.2 * one_cycle(6)(6))  # 0 at the end


def test_flip_test_scores_the_softmax_mean_of_each_image_and_its_mirror(tmp_path, data_root):
    """--flip-test's error is the one computed here by hand from the run's final weights on its 256 test images;
    --label-smoothing changes the loss the net is trained on (same seed, same batches)."""
    from common import data
    from common.data.augment import normalize
    plain = T.main(["--preset", "smoke", "--out-dir", str(tmp_path / "plain")])
    card = T.main(["--preset", "smoke", "--flip-test", "--label-smoothing", "0.5", "--out-dir", str(tmp_path)])
    assert "test_flip_error" not in plain
    run = only_run_dir(tmp_path, "04_resnet")
    rows = read_metrics(run)
    assert card["test_flip_error"] == [r for r in rows if r["split"] == "test_flip"][-1]["error"]
    first = [r["loss"] for r in read_metrics(only_run_dir(tmp_path / "plain", "04_resnet")) if r["split"] == "train"]
    assert [r["loss"] for r in rows if r["split"] == "train"][0] != pytest.approx(first[0], rel=1e-4)
    net = R.make_model("resnet8", T.Config()).eval()
    net.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    x, y = data.load("cifar10", data_root)["test"]
    x, y = normalize(x[:256], MEAN, STD), y[:256]
    with torch.no_grad():
        one = net(x).softmax(-1)
        p = (one + net(x.flip(-1)).softmax(-1)) / 2
    nll, nll_one = (F.nll_loss(q.log(), y).item() for q in (p, one))
    assert nll != pytest.approx(nll_one, rel=1e-4)  # the mirror images change the prediction, so this can tell
    flip = [r for r in rows if r["split"] == "test_flip"][-1]
    assert flip["loss"] == pytest.approx(nll, rel=1e-5)
    assert card["test_flip_error"] == pytest.approx((p.argmax(-1) != y).float().mean().item(), abs=1.5 / 256)


def test_overfits_one_batch_of_real_images(data_root):
    from common import data
    from common.data.augment import normalize
    x, y = data.load("cifar10", data_root)["train"]
    x, y = normalize(x[:32], MEAN, STD), y[:32]
    torch.manual_seed(0)
    net = M.resnet_cifar(8)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(40):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert (net.eval()(x).argmax(1) == y).all()


def test_smoke_run_card_and_evaluation_schedule(tmp_path, data_root):
    from common import data
    from common.data.augment import normalize
    card = T.main(["--preset", "smoke", "--out-dir", str(tmp_path)])
    run = only_run_dir(tmp_path, "04_resnet")
    summary = read_summary(run)
    assert summary["steps"] == 6 and summary["model"] == "resnet8"
    assert summary["dataset"] == "CIFAR-10 (JPEG-q75 mirror)" and summary["params"] == 75_290
    rows = read_metrics(run)
    assert [r["step"] for r in rows if r["split"] == "test"] == [3, 6]
    # the card's test error and loss are the final net's on the first 256 test images, single view, recomputed
    net = R.make_model("resnet8", T.Config()).eval()
    net.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    x, y = data.load("cifar10", data_root)["test"]
    with torch.no_grad():
        logits = net(normalize(x[:256], MEAN, STD))
    assert summary["value"] == card["value"] == pytest.approx((logits.argmax(1) != y[:256]).float().mean().item())
    assert summary["test_loss"] == pytest.approx(F.cross_entropy(logits, y[:256]).item(), rel=1e-4)


def test_degradation_smoke_writes_curves_plot_and_numbers(tmp_path, data_root, capsys):
    T.main(["--experiment", "degradation", "--preset", "smoke", "--out-dir", str(tmp_path)])
    run = only_run_dir(tmp_path, "04_resnet")
    assert (run / "training_error.png").stat().st_size > 5000
    curves = importlib.import_module("milestones.04_resnet.figure6").read_curves(run / "metrics.jsonl")
    assert {m: [s for s, _ in c["test"]] for m, c in curves.items()} == {m: [4] for m in curves}  # bold curves
    assert all([s for s, _ in c["train"]] == [2, 4] for c in curves.values())  # thin curves, logged every 2
    summary = read_summary(run)
    errors = summary["train_error"]
    assert set(errors) == {"plain8", "plain14", "resnet8", "resnet14"}
    assert summary["width"] == 16 and summary["cpu_seconds"] > 0
    assert summary["value"] == pytest.approx(errors["plain14"] - errors["plain8"], abs=1e-4)
    assert summary["residual_gap"] == pytest.approx(errors["resnet14"] - errors["resnet8"], abs=1e-4)
    assert summary["params_per_model"]["plain14"] == summary["params_per_model"]["resnet14"] == 172_506
    finals = [row for row in read_metrics(run) if row["split"] == "final"]
    assert [row["model"] for row in finals] == ["plain8", "plain14", "resnet8", "resnet14"]
    assert "plain14 training error" in capsys.readouterr().out
    assert not (run / "checkpoint.pt").exists()
    for name in errors:  # one checkpoint per net, holding that net after the last step
        state = torch.load(run / f"checkpoint-{name}.pt", weights_only=True)
        assert state["step"] == 4 and state["results"]["test_error"] == summary["test_error"][name]
        M.build(name).load_state_dict(state["model"])  # strict: the keys and shapes of that very net


def test_each_net_of_a_degradation_run_depends_on_the_seed_alone(tmp_path, data_root):
    """So a run split into processes (--models plain20,plain56 and --models resnet20,resnet56) gives the very
    numbers of the one four-net command."""
    cards = [T.main(["--experiment", "degradation", "--preset", "smoke", "--models", models, "--out-dir",
                     str(tmp_path / str(i))]) for i, models in enumerate(["plain8,resnet8", "resnet8,plain8"])]
    for name in ("plain8", "resnet8"):  # each trained once first, once second
        assert cards[0]["train_error"][name] == cards[1]["train_error"][name]
        assert cards[0]["test_error"][name] == cards[1]["test_error"][name]


def test_degradation_does_not_import_train():
    """No import circle: train.py and degradation.py both build on recipe.py, which imports neither."""
    def imported(module):
        tree = ast.parse((REPO / "milestones" / "04_resnet" / f"{module}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert "train" not in imported("degradation")
    assert not {"train", "degradation"} & imported("recipe")


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet21"], "6n+2"),
    (["--model", "vgg16"], "resnet<depth> or plain<depth>"),
    (["--lr-drops", "0.5,2"], "--lr-drops takes fractions"),
    (["--experiment", "degradation", "--models", "resnet20"], "at least two models"),
    (["--batch-size", "60000"], "larger than the training set"),
    (["--width", "0"], "--width is the number of filters"),
    (["--nesterov", "--momentum", "0"], "--nesterov needs --momentum > 0"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    (["--experiment", "degradation", "--width", "0"], "--width is the number of filters"),
])
def test_bad_input_is_a_clear_message(args, message, tmp_path, capsys, data_root):
    with pytest.raises(SystemExit) as e:
        T.main(["--preset", "smoke", "--out-dir", str(tmp_path), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("experiment", ["cifar", "degradation"])
def test_recipe_flags_fail_before_any_data_is_read(experiment, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MILESTONES_OFFLINE", "1")  # an empty data root: reading it would fail with another message
    with pytest.raises(SystemExit) as e:
        T.main(["--experiment", experiment, "--preset", "smoke", "--nesterov", "--momentum", "0",
                "--data-dir", str(tmp_path / "empty"), "--out-dir", str(tmp_path)])
    assert e.value.code == 2 and "--nesterov needs --momentum > 0" in capsys.readouterr().err


def test_degradation_refuses_to_resume(tmp_path, capsys, data_root):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")  # it must not even be read
    with pytest.raises(SystemExit) as e:
        T.main(["--experiment", "degradation", "--preset", "smoke", "--resume", str(tmp_path / "run")])
    assert e.value.code == 2 and "does not resume" in capsys.readouterr().err


def test_bad_depth_from_the_command_line_exits_2_without_a_traceback(tmp_path):
    r = run_cli("train", "04_resnet", "--model", "resnet21", "--out-dir", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "6n+2" in r.stderr and r.stderr.count("\n") == 1  # one line


def test_jpeg_check_reads_a_run_and_measures_each_round_trip(tmp_path, data_root, capsys):
    """On a smoke run's net and its 256 test images, the error 'as stored' is the run's own final test error (the
    same net, the same images); re-encoding at quality 95 moves pixels a little, at 10 a lot; bad input is one line."""
    jpeg = importlib.import_module("milestones.04_resnet.jpeg_check")
    T.main(["--preset", "smoke", "--out-dir", str(tmp_path)])
    run = only_run_dir(tmp_path, "04_resnet")
    out = jpeg.main(["--run", str(run), "--quality", "95,10", "--test-size", "256"])
    assert out["stored"]["error"] == pytest.approx(read_summary(run)["value"])
    assert 0 < out["q95"]["pixel_change"] < 3 < out["q10"]["pixel_change"]
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert jpeg.jpeg_roundtrip(x, 95).shape == x.shape and jpeg.jpeg_roundtrip(x, 95).dtype == torch.uint8
    for flags, says in ((["--quality", "100"], "must be in 1..95"), (["--quality", "x"], "takes integers")):
        with pytest.raises(SystemExit) as e:
            jpeg.main(["--run", str(run), *flags])
        assert e.value.code == 2 and says in capsys.readouterr().err
    with pytest.raises(SystemExit):
        jpeg.main(["--run", str(tmp_path)])
    assert "not a run directory" in capsys.readouterr().err
