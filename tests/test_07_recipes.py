"""07's paper recipes, constant by constant: each `paper` preset as the command line resolves it and the optimizer
it builds; the schedules (Burda et al.'s learning rate, DDPM's warm-up, the GAN release's momentum and decay) as a
run applies them; DDPM's noise schedule and its CIFAR-only flips; and the discriminator's cost as each release
writes it. Each pinned value cites where the paper (or the code it released) states it."""

import importlib

import numpy as np
import pytest
import torch
from PIL import Image

from common.checkpoint import load_checkpoint
from common.config import parse_config
from tests.conftest import only_run_dir, read_metrics, read_summary

train = importlib.import_module("milestones.07_vae_gan_diffusion.train")
recipe = importlib.import_module("milestones.07_vae_gan_diffusion.recipe")
model = importlib.import_module("milestones.07_vae_gan_diffusion.model")
unet = importlib.import_module("milestones.07_vae_gan_diffusion.unet")
train_vae = importlib.import_module("milestones.07_vae_gan_diffusion.train_vae")
train_gan = importlib.import_module("milestones.07_vae_gan_diffusion.train_gan")
train_ddpm = importlib.import_module("milestones.07_vae_gan_diffusion.train_ddpm")
MID = "07_vae_gan_diffusion"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def resolved(*argv):
    """The config a command line gets: dataclass defaults < the model's preset < flags."""
    argv = list(argv)
    return parse_config(train.Config, argv, train.presets_for(argv), experiments=train.EXPERIMENTS,
                        milestone=MID)


def adam_of(cfg) -> dict:
    opt = recipe.make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(opt, torch.optim.Adam)
    return opt.defaults


def smoke(out, *flags):
    train.main([*flags, "--preset", "smoke", "--out-dir", str(out)])
    return only_run_dir(out, MID)


def logged_lrs(run) -> list[tuple[int, float]]:
    return [(r["step"], r["lr"]) for r in read_metrics(run) if r["split"] == "train"]


# ---------------------------------------------------------------------------------------------------------
# The VAE: Burda et al. 2015's training of Kingma & Welling's model
# ---------------------------------------------------------------------------------------------------------

def test_vae_paper_preset_is_burda_et_als_training():
    cfg = resolved("--model", "vae", "--preset", "paper")
    # Burda et al. 2015, sec. 5 (and Table 1): one stochastic layer, two deterministic layers of 200 tanh units,
    # 50 latent units, i.e. 784-200-200-50
    assert (cfg.hidden, cfg.z_dim, cfg.activation) == ("200,200", 50, "tanh")
    assert train.model_name(cfg) == "vae-200-200-50-tanh"
    vae = model.build(cfg)["vae"]
    assert vae.hidden == (200, 200) and vae.z_dim == 50
    assert cfg.dataset == "mnist" and cfg.binarize  # sec. 5: MNIST, binarised stochastically afresh
    # sec. 5: Adam, beta_1 0.9, beta_2 0.999, epsilon 1e-4, minibatches of 20
    assert cfg.optimizer == "adam" and cfg.batch_size == 20
    adam = adam_of(cfg)
    assert adam["betas"] == (0.9, 0.999) and adam["eps"] == 1e-4 and adam["lr"] == 1e-3
    # sec. 5: 3^i passes at 0.001 * 10^(-i/7), i = 0..7: 3,280 passes
    assert cfg.schedule == "iwae" and cfg.lr == 1e-3 and cfg.epochs == sum(3 ** i for i in range(8)) == 3280
    # sec. 5: the test log-likelihood estimated with k = 5,000 importance samples, on the 10,000 test digits
    assert cfg.iw_samples == 5000 and cfg.test_size == 10000


def test_the_vae_card_names_burda_et_als_number_for_their_model_only(tmp_path, data_root):
    run = smoke(tmp_path / "burda", "--model", "vae", "--hidden", "200,200", "--z-dim", "50", "--steps", "2",
                "--eval-every", "2", "--iw-samples", "2", "--test-size", "8")
    card = read_summary(run)
    assert card["paper_value"] == 86.76  # Burda et al. 2015, Table 1: VAE, one stochastic layer, k = 1, L_5000
    assert "Table 1" in card["paper_source"] and card["iw_samples"] == 2
    other = read_summary(smoke(tmp_path / "other", "--model", "vae", "--steps", "2", "--eval-every", "2",
                               "--iw-samples", "2", "--test-size", "8"))
    assert other["paper_value"] is None  # a 784-32-4 VAE has no published number


def test_iwae_rate_schedule_is_3_to_the_i_epochs_at_10_to_the_minus_i_over_7():
    # Burda et al. 2015, sec. 5: pass i = 0..7 lasts 3^i epochs at lr 0.001 * 10^(-i/7)
    want = [10 ** (-i / 7) for i in range(8) for _ in range(3 ** i)]
    assert len(want) == 3280
    assert [train_vae.iwae_lr(e) for e in range(3280)] == pytest.approx(want, rel=1e-12)
    assert train_vae.iwae_lr(5000) == pytest.approx(0.1, rel=1e-12)  # past the schedule: the last rate


def test_a_vae_run_applies_the_iwae_schedule_per_epoch(tmp_path, data_root):
    """64 digits in batches of 32: two steps an epoch, so 10 steps cross the boundaries after epochs 0, 3 and 12."""
    run = smoke(tmp_path, "--model", "vae", "--schedule", "iwae", "--train-size", "64", "--steps", "30",
                "--log-every", "1", "--eval-every", "30", "--iw-samples", "0")
    lrs = logged_lrs(run)
    assert [s for s, _ in lrs] == list(range(1, 31))
    for step, lr in lrs:  # the rate the next step will use, in epoch = steps done // steps per epoch
        epoch = step // 2
        i = 0 if epoch < 1 else 1 if epoch < 1 + 3 else 2 if epoch < 1 + 3 + 9 else 3  # 3^i epochs at each i
        assert lr == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-9), step


# ---------------------------------------------------------------------------------------------------------
# The GANs
# ---------------------------------------------------------------------------------------------------------

def test_gan_paper_preset_is_the_released_mnist_configuration():
    cfg = resolved("--model", "gan", "--preset", "paper")
    # goodfeli/adversarial mnist.yaml (the paper's code): G 100 -> 1200 -> 1200 -> 784, batch 100, the first
    # 50,000 training digits, SGD lr 0.1 divided by 1.000004 per update, momentum 0.5 -> 0.7 over 250 epochs
    assert (cfg.hidden, cfg.z_dim, cfg.batch_size, cfg.train_size) == ("1200,1200", 100, 100, 50000)
    assert (cfg.optimizer, cfg.lr, cfg.lr_decay) == ("sgd", 0.1, 1.000004)
    assert (cfg.momentum, cfg.final_momentum, cfg.epochs) == (0.5, 0.7, 250)
    # Goodfellow et al. 2014, Algorithm 1 and sec. 5: k = 1 discriminator step; sec. 3: G maximises log D(G(z))
    assert cfg.d_steps == 1 and cfg.g_loss == "nonsaturating" and cfg.gan_update == "alternating"


def test_gan_momentum_rises_from_0_5_to_0_7_over_250_epochs():
    cfg = resolved("--model", "gan", "--preset", "paper")
    # mnist.yaml: MomentumAdjustor, final_momentum 0.7, start 1, saturate 250 (our epochs count from 0)
    assert train_gan.momentum(cfg, 0) == 0.5
    assert train_gan.momentum(cfg, 249) == pytest.approx(0.7, abs=1e-15) == train_gan.momentum(cfg, 400)
    assert train_gan.momentum(cfg, 83) == pytest.approx(0.5 + 0.2 * 83 / 249, abs=1e-15)


def test_a_gan_run_divides_the_rate_by_1_000004_every_update(tmp_path, data_root):
    # mnist.yaml: ExponentialDecay, decay_factor 1.000004, min_lr 1e-6
    run = smoke(tmp_path, "--model", "gan", "--steps", "5", "--log-every", "1", "--eval-every", "5")
    lrs = logged_lrs(run)
    assert [s for s, _ in lrs] == [1, 2, 3, 4, 5]
    for step, lr in lrs:
        assert lr == pytest.approx(0.1 * 1.000004 ** -step, rel=1e-12)
    cfg = resolved("--model", "gan", "--preset", "paper")
    assert train_gan.sgd_decay(cfg, 1000) == pytest.approx(1.000004 ** -1000, rel=1e-12)
    assert train_gan.sgd_decay(cfg, 3_000_000) * cfg.lr == pytest.approx(1e-6, rel=1e-12)  # the floor, after 2.9M


def test_dcgan_paper_preset_is_radford_et_als_64x64_recipe(tmp_path):
    cfg = resolved("--model", "dcgan", "--preset", "paper", "--image-dir", str(tmp_path))
    assert model.image_shape(cfg) == (3, 64, 64)  # Radford et al. 2015, Figure 1: 64 x 64 x 3 images
    assert cfg.z_dim == 100  # Figure 1: a 100-dimensional z
    assert cfg.width == 128  # Figure 1: 128 channels at 32 x 32, doubling to 1024 at 4 x 4
    # sec. 4: minibatch SGD with batch 128, Adam at lr 0.0002 with beta_1 0.5
    assert cfg.optimizer == "adam" and cfg.batch_size == 128
    adam = adam_of(cfg)
    assert adam["lr"] == 2e-4 and adam["betas"] == (0.5, 0.999)
    assert cfg.epochs == 25  # Newmu/dcgan_code's training scripts: niter 25
    nets = model.build(cfg)
    assert nets["G"].start == 4 and nets["G"].top == 1024  # Figure 1: the projection is 4 x 4 x 1024
    # every quick and smoke recipe keeps the paper's optimizer (sec. 4) at its own scale
    for preset in ("default", "quick", "smoke"):
        r = train.RECIPES["dcgan"][preset]
        assert (r["optimizer"], r["lr"], r["beta1"]) == ("adam", 2e-4, 0.5), preset
    assert train.RECIPES["dcgan"]["default"]["batch_size"] == train.RECIPES["dcgan"]["quick"]["batch_size"] == 128


def test_each_discriminator_cost_is_its_releases(monkeypatch, tmp_path, data_root):
    """The loss D steps on, measured in a run: half the two cross-entropies for the MLP GAN (goodfeli/adversarial,
    AdversaryCost2: d_obj = 0.5 * (...)), their plain sum for DCGAN (Newmu/dcgan_code: d_cost = d_cost_real +
    d_cost_gen)."""
    assert train_gan.D_COST_SCALE == {"gan": 0.5, "dcgan": 1.0}
    cost, step = train_gan.discriminator_loss, train_gan.optimizer_step
    for name, scale in (("gan", 0.5), ("dcgan", 1.0)):
        seen = {"cost": [], "stepped": []}
        monkeypatch.setattr(train_gan, "discriminator_loss", lambda r, f: seen["cost"].append(cost(r, f)) or
                            seen["cost"][-1])
        monkeypatch.setattr(train_gan, "optimizer_step", lambda loss, *a, **k: seen["stepped"].append(loss) or
                            step(loss, *a, **k))
        smoke(tmp_path / name, "--model", name, "--steps", "1", "--eval-every", "1")
        d_cost, d_step = seen["cost"][0], seen["stepped"][0]  # D steps first (Algorithm 1)
        assert float(d_step.detach()) == pytest.approx(scale * float(d_cost.detach()), rel=1e-6), name
        assert float(d_cost.detach()) > 0.1


# ---------------------------------------------------------------------------------------------------------
# DDPM
# ---------------------------------------------------------------------------------------------------------

def test_ddpm_paper_preset_is_ho_et_als_cifar10_run():
    cfg = resolved("--model", "ddpm", "--preset", "paper")
    assert cfg.dataset == "cifar10" and model.image_shape(cfg) == (3, 32, 32)
    assert cfg.timesteps == 1000  # Ho et al. 2020, sec. 4: T = 1000
    d = model.diffusion_of(cfg)  # sec. 4: beta_t linear from beta_1 = 1e-4 to beta_T = 0.02
    assert d.T == 1000 and d.variance == "beta"  # sec. 3.2 / 4: sigma_t^2 = beta_t
    torch.testing.assert_close(d.betas[1:], torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), rtol=0, atol=0)
    # App. B: the CIFAR-10 model, four resolutions (32 to 4), two residual blocks each, self-attention at 16 x 16;
    # ch 128 and the multipliers (1, 2, 2, 2) as the released code's CIFAR-10 run sets them
    assert (cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.attn) == (128, "1,2,2,2", 2, "16")
    assert cfg.dropout == 0.1  # App. B: dropout 0.1 on CIFAR-10
    # App. B: lr 2e-4 (Adam), batch 128 on CIFAR-10; EMA decay 0.9999; 800k training steps
    assert cfg.optimizer == "adam" and cfg.batch_size == 128 and cfg.lr == 2e-4
    assert adam_of(cfg)["betas"] == (0.9, 0.999)  # the release keeps TF's Adam defaults
    assert cfg.ema_decay == 0.9999 and cfg.steps == 800_000
    # the released code's CIFAR-10 run: 5,000 warm-up steps, gradient norm clipped at 1
    assert cfg.warmup_steps == 5000 and cfg.clip == 1.0
    net = model.build(cfg)["unet"]
    assert sum(p.numel() for p in net.parameters()) == 35_746_307  # App. B: "35.7 million parameters"
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 2 * 4 + 2 + 3 * 4 and set(drops) == {0.1}  # one in each residual block


def test_ddpm_warmup_is_linear_over_5000_steps():
    # the released code: lr * min(step / warmup, 1), the step counted from 1
    assert [train_ddpm.warmup(s, 5000) for s in (0, 1, 2499, 4998, 4999, 5000, 700_000)] == \
        [1 / 5000, 2 / 5000, 0.5, 4999 / 5000, 1.0, 1.0, 1.0]


def test_a_ddpm_run_warms_up_and_flips_cifar10_only(monkeypatch, tmp_path, data_root):
    """The rate a run logs follows the warm-up; horizontal flips (Ho et al. 2020, App. B: CIFAR-10 only) are drawn
    once a step on CIFAR-10 and never on MNIST."""
    flips = []
    flip = train_ddpm.random_hflip
    monkeypatch.setattr(train_ddpm, "random_hflip", lambda x: flips.append(len(x)) or flip(x))
    run = smoke(tmp_path / "mnist", "--model", "ddpm", "--warmup-steps", "4", "--log-every", "1", "--eval-every", "6")
    assert flips == []
    lrs = logged_lrs(run)
    assert [s for s, _ in lrs] == list(range(1, 7))
    for step, lr in lrs:  # the rate of the next step, whose 0-based index is `step`
        assert lr == pytest.approx(1e-3 * min((step + 1) / 4, 1.0), rel=1e-12)
    smoke(tmp_path / "cifar", "--model", "ddpm", "--dataset", "cifar10", "--steps", "2", "--eval-every", "2")
    assert flips == [8, 8]  # every batch of 8, once


# ---------------------------------------------------------------------------------------------------------
# The DCGAN paper preset needs the paper's kind of data
# ---------------------------------------------------------------------------------------------------------

def write_images(folder, n: int):
    """n random RGB PNGs of assorted non-square sizes, half of them in a subfolder."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (60 + 3 * i, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / ("sub" if i % 2 else ".") / f"{i}.png")


def test_load_folder_centre_crops_and_resizes(tmp_path):
    write_images(tmp_path / "im", 5)
    x = recipe.load_folder(str(tmp_path / "im"), 64)
    assert x.shape == (5, 3, 64, 64) and x.dtype == torch.uint8
    assert len(recipe.load_folder(str(tmp_path / "im"), 64, limit=2)) == 2
    im = Image.open(tmp_path / "im" / "0.png")  # 80 x 60: the centre 60 x 60, columns 10..69
    want = np.asarray(im.crop((10, 0, 70, 60)).resize((64, 64), Image.BICUBIC))
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), want)


def test_dcgan_paper_preset_trains_the_64x64_nets_on_an_image_folder(tmp_path, capsys):
    write_images(tmp_path / "images", 8)
    # the paper's 64 x 64 layout and recipe; only the width and the batch are cut to keep the test fast
    train.main(["--model", "dcgan", "--preset", "paper", "--image-dir", str(tmp_path / "images"), "--width", "8",
                "--batch-size", "4", "--steps", "1", "--out-dir", str(tmp_path / "out")])
    run = only_run_dir(tmp_path / "out", MID)
    state = load_checkpoint(run)
    assert state["step"] == 1 and state["config"]["image_size"] == 64 and state["config"]["lr"] == 2e-4
    w = state["model"]
    assert w["G.project.weight"].shape == (8 * 8 * 4 * 4, 100)  # z (100) -> 4 x 4 x 8w
    assert w["G.net.9.weight"].shape == (8, 3, 5, 5)  # the last of four transposed convolutions: w -> 3 at 64 x 64
    assert w["D.net.0.weight"].shape == (8, 3, 5, 5) and w["D.out.weight"].shape == (1, 64 * 4 * 4)
    assert Image.open(run / "samples" / "step_1.png").size == (8 * 66 + 2, 8 * 66 + 2)  # 8 x 8 grid of 64 x 64
    summary = (run / "summary.json").read_text()
    assert '"dataset": "images:images"' in summary

    def error(*argv):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            train.main([*argv, "--out-dir", str(tmp_path / "bad")])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return err
    err = error("--model", "dcgan", "--preset", "paper")
    assert "LSUN bedrooms" in err and "ImageNet-1k" in err and "--image-dir" in err
    (tmp_path / "empty").mkdir()
    assert "no images" in error("--model", "dcgan", "--preset", "paper", "--image-dir", str(tmp_path / "empty"))
    assert "no such folder" in error("--model", "dcgan", "--preset", "paper", "--image-dir", str(tmp_path / "nope"))
    assert "--image-dir is for --model dcgan" in error("--model", "vae", "--image-dir", str(tmp_path / "images"))
    assert "give one" in error("--model", "dcgan", "--preset", "paper", "--image-dir", str(tmp_path / "images"),
                               "--dataset", "cifar10")
    assert not (tmp_path / "bad").exists()
