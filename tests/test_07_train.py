"""07's train and sample scripts: every generator's smoke run leaves its record and its sample grids, the
comparisons train two arms in one run, the yardstick's numbers reach the summary, runs resume exactly (the EMA
and BatchNorm statistics too), sample.py draws from any of the four, and user mistakes are one-line errors."""

import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from common.checkpoint import load_checkpoint
from tests.conftest import only_run_dir, read_metrics, read_summary

train = importlib.import_module("milestones.07_vae_gan_diffusion.train")
sample = importlib.import_module("milestones.07_vae_gan_diffusion.sample")
train_gan = importlib.import_module("milestones.07_vae_gan_diffusion.train_gan")
gan = importlib.import_module("milestones.07_vae_gan_diffusion.gan")
MID = "07_vae_gan_diffusion"
SIDE = {"vae": 28, "gan": 28, "dcgan": 28, "ddpm": 8}  # ddpm's smoke preset trains at 8x8 to stay fast


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny: on a busy CPU, a second OpenMP thread waiting for a core costs more than it splits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smoke(out, *flags):
    train.main([*flags, "--preset", "smoke", "--out-dir", str(out)])
    return only_run_dir(out, MID)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    """One smoke run per model, made on first use and shared by the tests below."""
    made = {}

    def get(model):
        if model not in made:
            made[model] = smoke(tmp_path_factory.mktemp(f"smoke-{model}"), "--model", model)
        return made[model]
    return get


def grid_cells(path, side: int, nrow: int = 8, rows: int = 8) -> np.ndarray:
    """The images of a PNG grid made by save_grid, (rows, nrow, side, side) grey levels, after checking the PNG
    signature, a size above a few hundred bytes and the grid's exact dimensions (2-pixel padding)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 300
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    step = side + 2
    assert image.shape == (rows * step + 2, nrow * step + 2)
    return np.stack([np.stack([image[2 + r * step:2 + r * step + side, 2 + c * step:2 + c * step + side]
                               for c in range(nrow)]) for r in range(rows)])


def user_error(argv, capsys, main=train.main) -> str:
    capsys.readouterr()  # whatever ran before
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", train.MODELS)
def test_smoke_run_writes_its_summary_and_sample_grids(model, runs):
    run = runs(model)
    card = read_summary(run)
    assert card["metric"] == ("test_nll" if model == "vae" else "classifier_fid")
    assert card["model"].startswith(model) and card["steps"] == train.RECIPES[model]["smoke"]["steps"]
    if model == "vae":  # the importance-sampled estimate is a better bound than the ELBO
        assert 0 < card["value"] < -card["test_elbo"]
    evals = [r["step"] for r in read_metrics(run) if r["split"] == "test"]
    assert evals and evals[-1] == card["steps"]
    for step in evals:  # a grid at every evaluation
        cells = grid_cells(run / "samples" / f"step_{step}.png", SIDE[model]).reshape(64, -1)
        assert len({c.tobytes() for c in cells}) == 64  # 64 different draws, not one picture repeated


def test_vae_with_a_2d_latent_draws_the_manifold(tmp_path, data_root):
    run = smoke(tmp_path, "--model", "vae", "--z-dim", "2")
    cells = grid_cells(run / "manifold.png", 28, nrow=20, rows=20)
    assert np.abs(cells[0, 0] - cells[-1, -1]).mean() > 0  # opposite corners of the latent square decode apart


def test_gan_loss_trains_two_arms_into_one_run(runs, tmp_path, data_root, capsys):
    capsys.readouterr()
    run = smoke(tmp_path, "--experiment", "gan_loss")
    card = read_summary(run)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("gan-minimax-vs-nonsaturating [")]
    assert len(lines) == 2 and all(": not scored; " in ln and "; ;" not in ln for ln in lines), lines  # issue 25
    assert (run / "gan_loss.png").read_bytes()[:4] == b"\x89PNG"  # the arms side by side (recipe.side_by_side)
    assert set(card["arms"]) == {"minimax", "nonsaturating"}
    assert card["steps"] == 2 * train.RECIPES["gan"]["smoke"]["steps"]
    arms = {arm: load_checkpoint(run / f"checkpoint-{arm}.pt") for arm in card["arms"]}
    assert {s["config"]["g_loss"] for s in arms.values()} == {"minimax", "nonsaturating"}
    g = "G.out.weight"  # the same seed and data: only the generator's loss tells the arms apart
    assert not torch.equal(arms["minimax"]["model"][g], arms["nonsaturating"]["model"][g])
    alone = load_checkpoint(runs("gan"))  # each arm is the run it would have been on its own
    for k, v in alone["model"].items():
        assert torch.equal(v, arms["nonsaturating"]["model"][k]), k
    for arm in card["arms"]:
        assert sorted(p.name for p in (run / "samples" / arm).glob("step_*.png"))
    assert {r.get("arm") for r in read_metrics(run)} == {"minimax", "nonsaturating"}


def test_the_yardstick_scores_the_runs_own_samples(tmp_path, data_root):
    """The summary's numbers are those of the trained generator's seeded samples: drawn again from the checkpoint
    and scored again by evaluate.py, they give the same FID, KID (the plain MMD^2 over subsets of n // 2) and class
    readings; another draw of samples does not."""
    evaluate = importlib.import_module("milestones.07_vae_gan_diffusion.evaluate")
    recipe = importlib.import_module("milestones.07_vae_gan_diffusion.recipe")
    # a 20-step classifier (cached under its own name) keeps this fast
    run = smoke(tmp_path, "--model", "dcgan", "--fid-samples", "64", "--fid-classifier-steps", "20")
    card = read_summary(run)
    assert card["value"] == card["fcd"] and card["fid_samples"] == 64
    cfg, nets, _ = sample.load_run(str(run))
    clf = evaluate.load_or_train_classifier("mnist", None, "cpu", 20)

    def rescore(seed):
        with recipe.seeded(seed, "cpu"):
            x = recipe.draw(cfg, nets, 64, "cpu")
        return evaluate.score_samples(x, "mnist", None, 64, clf, "cpu", seed=cfg.seed)
    again = rescore(cfg.seed + 1)  # score() draws its samples with seed + 1
    for key in ("fcd", "kid", "kid_std", "fcd_real", "kid_real", "confident_fraction", "class_entropy"):
        assert card[key] == pytest.approx(again[key], rel=1e-6, abs=1e-9), key
    f_real = evaluate.features(clf, evaluate.real_images("mnist", None, 64, cfg.seed)["test"].float() / 255)
    with recipe.seeded(cfg.seed + 1, "cpu"):
        f_fake = evaluate.features(clf, recipe.draw(cfg, nets, 64, "cpu"))
    assert card["kid"] == pytest.approx(evaluate.kid(f_real, f_fake, 100, 32, cfg.seed)[0], rel=1e-6)
    assert card["fcd"] != pytest.approx(rescore(cfg.seed + 7)["fcd"], rel=1e-3)  # the seeded draw, not any draw
    assert any(r["split"] == "score" for r in read_metrics(run))


@pytest.mark.parametrize("model", ["ddpm", "dcgan"])
def test_resume_is_exact_with_the_ema_and_batchnorm_statistics(model, tmp_path, data_root):
    n = train.RECIPES[model]["smoke"]["steps"]
    full = smoke(tmp_path / "full", "--model", model, "--eval-every", "100")
    half = smoke(tmp_path / "half", "--model", model, "--eval-every", "100", "--steps", str(n // 2))
    train.main(["--resume", str(half), "--steps", str(n)])
    a, b = load_checkpoint(full), load_checkpoint(half)
    assert a["step"] == b["step"] == n
    for k, v in a["model"].items():  # BatchNorm's running statistics are in here too
        assert torch.equal(v, b["model"][k]), k
    if model == "ddpm":
        assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == n
        for k, v in a["ema"]["shadow"].items():
            assert torch.equal(v, b["ema"]["shadow"][k]), k
    else:
        assert a["optimizer"].keys() == {"D", "G"}  # both optimizers are saved


# ---------------------------------------------------------------------------------------------------------
# sample.py
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", train.MODELS)
def test_sample_writes_a_grid_from_any_run(model, runs, tmp_path):
    out = sample.main(["--run", str(runs(model)), "--n", "16", "--out", str(tmp_path / "grid.png")])
    grid_cells(out, SIDE[model], rows=2)


@pytest.mark.parametrize("model", ["vae", "dcgan"])
def test_sample_interpolates_in_latent_space(model, runs):
    out = sample.main(["--run", str(runs(model)), "--interpolate", "--n", "24"])
    assert out == runs(model) / "samples" / "interpolation-seed0.png"
    cells = grid_cells(out, SIDE[model], nrow=sample.COLUMNS, rows=3)
    assert np.abs(cells[:, 0] - cells[:, -1]).mean() > 0  # each row goes somewhere
    steps = np.abs(np.diff(cells, axis=1)).mean(axis=(2, 3))  # (rows, COLUMNS - 1): the walk's stride
    assert steps.max() < np.abs(cells[:, 0] - cells[:, -1]).mean(axis=(1, 2)).max() + 1e-9  # small steps, no jumps


def test_sample_draws_the_manifold_of_a_2d_vae_as_the_run_did(runs, tmp_path, capsys, data_root):
    run = smoke(tmp_path, "--model", "vae", "--z-dim", "2")
    out = sample.main(["--run", str(run), "--manifold", "--n", "400"])
    assert out == run / "samples" / "manifold-seed0.png"
    drawn = grid_cells(out, 28, nrow=20, rows=20)
    assert np.array_equal(drawn, grid_cells(run / "manifold.png", 28, nrow=20, rows=20))  # the same final weights
    small = grid_cells(sample.main(["--run", str(run), "--manifold", "--n", "30", "--out", str(tmp_path / "m.png")]),
                       28, nrow=5, rows=5)  # floor(sqrt(30)) = 5 a side
    assert len({c.tobytes() for c in small.reshape(25, -1)}) > 1
    assert "needs a 2-D latent space" in user_error(["--run", str(runs("vae")), "--manifold"], capsys, sample.main)
    assert "--manifold decodes a grid of the VAE's" in user_error(["--run", str(runs("gan")), "--manifold"], capsys,
                                                                  sample.main)
    assert "ask for one" in user_error(["--run", str(run), "--manifold", "--interpolate"], capsys, sample.main)


def test_sample_draws_the_ddpm_trajectory_and_ddim(runs, tmp_path):
    out = sample.main(["--run", str(runs("ddpm")), "--trajectory", "--n", "3"])
    cells = grid_cells(out, SIDE["ddpm"], nrow=sample.COLUMNS + 1, rows=3)
    assert not np.array_equal(cells[:, 0], cells[:, -1])  # x_T is noise, x_0 what the chain made of it
    out = sample.main(["--run", str(runs("ddpm")), "--ddim-steps", "5", "--n", "8", "--out", str(tmp_path / "d.png")])
    grid_cells(out, SIDE["ddpm"], rows=1)


def test_sample_refuses_what_a_run_cannot_draw(runs, tmp_path, capsys, data_root):
    importlib.import_module("milestones.01_dnn.train").main(
        ["--experiment", "mnist", "--preset", "smoke", "--out-dir", str(tmp_path)])
    classifier = only_run_dir(tmp_path, "01_dnn")
    assert "is a run of 01_dnn, not 07_vae_gan_diffusion" in user_error(["--run", str(classifier)], capsys, sample.main)
    assert "no checkpoint at" in user_error(["--run", str(tmp_path / "nowhere")], capsys, sample.main)
    assert "--interpolate walks the latent space" in user_error(
        ["--run", str(runs("ddpm")), "--interpolate"], capsys, sample.main)
    assert "--trajectory shows DDPM's denoising chain" in user_error(
        ["--run", str(runs("gan")), "--trajectory"], capsys, sample.main)
    assert "--ddim-steps is a DDPM sampler" in user_error(
        ["--run", str(runs("vae")), "--ddim-steps", "5"], capsys, sample.main)


def test_sample_points_at_the_arms_of_a_comparison(tmp_path, capsys, data_root):
    run = smoke(tmp_path, "--experiment", "gan_loss")
    err = user_error(["--run", str(run)], capsys, sample.main)
    assert "one checkpoint per arm" in err and "checkpoint-minimax.pt" in err
    out = sample.main(["--run", str(run / "checkpoint-minimax.pt"), "--n", "8"])
    grid_cells(out, 28, rows=1)


# ---------------------------------------------------------------------------------------------------------
# Mistakes
# ---------------------------------------------------------------------------------------------------------

def test_unknown_model_is_argparses_error(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--model", "pixelcnn"])
    assert e.value.code == 2 and "invalid choice: 'pixelcnn'" in capsys.readouterr().err


def test_flags_of_another_model_and_bad_recipes_are_refused(runs, tmp_path, capsys):
    base = ["--preset", "smoke", "--out-dir", str(tmp_path)]
    assert "--ema-decay is for --model ddpm, not gan" in user_error([*base, "--model", "gan", "--ema-decay", "0.9"],
                                                                    capsys)
    assert "--iw-samples is for --model vae, not ddpm" in user_error([*base, "--model", "ddpm", "--iw-samples", "5"],
                                                                     capsys)
    assert "not a ddpm recipe" in user_error([*base, "--model", "ddpm", "--optimizer", "sgd"], capsys)
    assert "Bernoulli" in user_error([*base, "--model", "vae", "--dataset", "cifar10"], capsys)
    assert "--timesteps must be at least 21" in user_error([*base, "--model", "ddpm", "--timesteps", "10"], capsys)
    assert "from scratch" in user_error(["--experiment", "gan_loss", "--resume", str(runs("gan"))], capsys)


def test_image_size_the_unet_cannot_halve_is_one_line(tmp_path, capsys):
    err = user_error(["--model", "ddpm", "--preset", "smoke", "--image-size", "30", "--ch-mult", "1,2,2",
                      "--out-dir", str(tmp_path)], capsys)
    assert "image size 30 is not divisible by 4" in err


def test_fid_without_a_cached_classifier_or_data_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MILESTONES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MILESTONES_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    err = user_error(["--model", "gan", "--preset", "smoke", "--fid-samples", "10", "--data-dir",
                      str(tmp_path / "empty"), "--out-dir", str(tmp_path)], capsys)
    assert "classifier FID needs a classifier for mnist: none cached at" in err
    assert not (tmp_path / MID).exists()  # it fails before a run directory is made


def test_inception_fid_without_its_weights_fails_before_training(tmp_path, capsys, monkeypatch):
    evaluate = importlib.import_module("milestones.07_vae_gan_diffusion.evaluate")

    def missing():
        raise evaluate.UserError(evaluate.INCEPTION_MISSING)
    monkeypatch.setattr(evaluate, "inception_metric", missing)  # as offline without torchmetrics' weights
    err = user_error(["--model", "gan", "--preset", "smoke", "--fid-samples", "10", "--inception-fid",
                      "--out-dir", str(tmp_path)], capsys)
    assert err == f"error: {evaluate.INCEPTION_MISSING}"
    assert not (tmp_path / MID).exists()
    err = user_error(["--model", "gan", "--preset", "smoke", "--inception-fid", "--out-dir", str(tmp_path)], capsys)
    assert "give --fid-samples > 0" in err


def test_inception_fid_scores_the_same_samples_against_real_test_images(tmp_path, data_root, monkeypatch):
    """With a stand-in for torchmetrics' metric, the run feeds it the n real test digits of the classifier FID and
    the n scored samples, as [0, 1] three-channel images, and its value reaches the summary beside that FID."""
    evaluate = importlib.import_module("milestones.07_vae_gan_diffusion.evaluate")
    seen = {True: [], False: []}

    class StandIn:
        def to(self, device):
            return self

        def update(self, x, real):
            seen[real].append(x)

        def compute(self):
            return torch.tensor(float(sum(len(x) for x in seen[True]) + 0.5))
    monkeypatch.setattr(evaluate, "inception_metric", StandIn)
    run = smoke(tmp_path, "--model", "gan", "--fid-samples", "16", "--fid-classifier-steps", "20",
                "--inception-fid")
    real, fake = torch.cat(seen[True]), torch.cat(seen[False])
    assert real.shape == fake.shape == (16, 3, 28, 28) and 0 <= float(fake.min()) <= float(fake.max()) <= 1
    seed = json.loads((run / "config.json").read_text())["config"]["seed"]
    digits = evaluate.real_images("mnist", None, 16, seed)["test"].float() / 255  # the classifier FID's test digits
    assert torch.equal(real[:, :1], digits)
    assert not torch.equal(real[:, :1], evaluate.real_images("mnist", None, 16, seed + 1)["test"].float() / 255)
    assert read_summary(run)["inception_fid"] == 16.5


def test_simultaneous_step_takes_each_nets_own_gradient_at_the_pre_update_parameters():
    """The release's update (AdversaryCost2): D moves by d_obj's gradient only, G by g_obj's only, both taken before
    either net changes, through one pass of D (one dropout mask)."""
    torch.manual_seed(0)
    G, D = torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(4, 1))
    x, z = torch.randn(5, 4), torch.randn(5, 3)
    g0, d0 = [p.detach().clone() for p in G.parameters()], [p.detach().clone() for p in D.parameters()]
    opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1)
    no_scaling = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(1)
    fake = D(G(z)).squeeze(-1)
    real = D(x).squeeze(-1)
    loss_d, loss_g = gan.discriminator_loss(real, fake), gan.generator_loss(fake)
    want_d = torch.autograd.grad(0.5 * loss_d, list(D.parameters()), retain_graph=True)
    want_g = torch.autograd.grad(loss_g, list(G.parameters()), retain_graph=True)
    train_gan.simultaneous_step((0.5 * loss_d, D, opt_d, no_scaling), (loss_g, G, opt_g, no_scaling))
    for p, p0, g in zip(D.parameters(), d0, want_d):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * g)
    for p, p0, g in zip(G.parameters(), g0, want_g):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * g)
    assert any(g.abs().sum() > 0 for g in want_g) and any(g.abs().sum() > 0 for g in want_d)


def test_simultaneous_gan_update_runs_and_refuses_k_above_one(tmp_path, data_root, capsys):
    run = smoke(tmp_path, "--model", "gan", "--gan-update", "simultaneous")
    assert read_summary(run)["steps"] == train.RECIPES["gan"]["smoke"]["steps"]
    assert "d-steps" in user_error(["--model", "gan", "--preset", "smoke", "--gan-update", "simultaneous",
                                    "--d-steps", "2", "--out-dir", str(tmp_path / "k2")], capsys)
    assert "gan-update" in user_error(["--model", "dcgan", "--preset", "smoke", "--gan-update", "simultaneous",
                                       "--out-dir", str(tmp_path / "dc")], capsys)
