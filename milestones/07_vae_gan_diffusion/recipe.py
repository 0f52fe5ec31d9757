"""What 07's four training recipes (train_vae.py, train_gan.py, train_ddpm.py) and sample.py share: the images at
the size a model trains on (the networks of each --model are model.py's), drawing samples and saving grids, the
optimizer, a session per run or per arm, the yardstick's scoring at the end of a run (evaluate.py), and the
figure a comparison run ends with: its arms' sample grids side by side (figures.py redraws the committed ones).
"""

import contextlib
import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid, save_image

from common import data
from common.checkpoint import load_checkpoint, restore
from common.errors import UserError
from common.logging import progress
from common.plot import pyplot, save
from common.session import Session

from . import evaluate
from .diffusion import EMA
from .model import build, diffusion_of, image_shape, native_shape

MILESTONE = "07_vae_gan_diffusion"
GANS = ("gan", "dcgan")
GRID = 64  # images in every sample grid (8 x 8)


def resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Images (N, C, H, W), uint8 or float in [0, 1], to side x side (bilinear, antialiased), same dtype."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    out = []
    for chunk in x.split(4096):
        y = F.interpolate(chunk.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.clamp(0, 1))
    return torch.cat(out)


IMAGE_FILES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_files(folder: str) -> list[Path]:
    """The image files under `folder` and its subfolders, sorted; none, or no folder, is a UserError."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--image-dir {folder}: no such folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_FILES and p.is_file())
    if not paths:
        raise UserError(f"--image-dir {folder} holds no images ({', '.join(IMAGE_FILES)})")
    return paths


def load_folder(folder: str, side: int, limit: int = 0) -> torch.Tensor:
    """Every image under `folder` (sorted paths, subfolders included; the first `limit` if > 0), each centre-cropped
    to a square and resized to side x side (PIL bicubic, antialiased), RGB: uint8 (N, 3, side, side)."""
    paths = image_files(folder)
    out = torch.empty(len(paths[:limit or None]), 3, side, side, dtype=torch.uint8)
    for i, path in enumerate(paths[:limit or None]):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except OSError as e:
            raise UserError(f"cannot read {path} as an image: {e}") from None
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((side, side), Image.BICUBIC)
        out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)  # (3, side, side)
    return out


def load_images(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and test images, uint8 (N, C, H, W) on the CPU, at the size the model trains on. An image folder
    has no test split: its first 1,000 training images stand in for it (D's outputs on real images)."""
    if cfg.image_dir:
        x = load_folder(cfg.image_dir, image_shape(cfg)[1], cfg.train_size)
        return x, x[:1000]
    splits = data.load(cfg.dataset, cfg.data_dir)
    x_train, x_test = splits["train"][0], splits["test"][0]
    if cfg.train_size:
        x_train = x_train[:cfg.train_size]
    side = image_shape(cfg)[1]
    return resize(x_train, side), resize(x_test, side)


def to_unit(cfg, x: torch.Tensor) -> torch.Tensor:
    """A model's output images -> [0, 1] (DCGAN and DDPM work in [-1, 1])."""
    return ((x.float() + 1) / 2).clamp(0, 1) if cfg.model in ("dcgan", "ddpm") else x.float().clamp(0, 1)


@torch.no_grad()
def draw(cfg, nets, n: int, device, diffusion=None, ema_net=None, rt=None) -> torch.Tensor:
    """n samples from the model, in [0, 1], (n, C, H, W) at the training size, on the CPU. Uses the global RNG
    (call inside `seeded` for fixed noise). The VAE gives pixel means E[x|z], z ~ p(z); DDPM runs Algorithm 2
    with the averaged weights."""
    shape = image_shape(cfg)
    if cfg.model == "vae":
        return nets["vae"].sample(n).view(n, *shape).cpu()
    if cfg.model in GANS:
        with judging(cfg, nets["G"]) as G:
            return to_unit(cfg, G(G.noise(n, device))).cpu()
    with rt.autocast() if rt is not None else contextlib.nullcontext():
        x = diffusion.sample(ema_net, (n, *shape), device=device, clip_denoised=cfg.clip_denoised)
    return to_unit(cfg, x).cpu()


@contextlib.contextmanager
def judging(cfg, net: nn.Module):
    """A GAN's G or D set up to draw or judge with, as the papers' code did: DCGAN's BatchNorm normalises each batch
    with its own statistics (on a copy in training mode, so the running averages stay untouched); the MLPs run
    without dropout."""
    if cfg.model == "dcgan":
        yield copy.deepcopy(net).train()
        return
    was = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was)


@contextlib.contextmanager
def seeded(seed: int, device):
    """The same random numbers at every call, and the training's own random streams left where they were."""
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def save_grid(images: torch.Tensor, path, nrow: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, padding=2)


def make_optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adagrad":  # the VAE paper's
        return torch.optim.Adagrad(params, lr=cfg.lr)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, 0.999), eps=cfg.adam_eps)


def session(cfg, rt, run, total: int, per_epoch: int, arm):
    """The run's own session, or (for one arm of a comparison) a session with a checkpoint of its own."""
    if arm is None:
        return Session(cfg, rt, run, total, per_epoch)
    return Session(cfg, rt, run, total, per_epoch, checkpoint=run.dir / f"checkpoint-{arm}.pt", tag={"arm": arm},
                   desc=f"{cfg.model} {arm}")


def samples_dir(run, arm):
    return run.dir / "samples" / (arm or "")


def load_classifier(cfg, rt):
    """The yardstick's classifier, loaded (or trained, once) before training, so a missing one fails now."""
    if cfg.inception_fid and not cfg.fid_samples:
        raise UserError("--inception-fid scores the --fid-samples samples: give --fid-samples > 0")
    if not cfg.fid_samples or cfg.image_dir or not rt.is_main:  # an image folder has no classifier to score with
        return None
    if cfg.inception_fid:
        evaluate.inception_metric()  # its weights, now: a missing download fails before training, not after
    return evaluate.load_or_train_classifier(cfg.dataset, cfg.data_dir, rt.device, cfg.fid_classifier_steps or None)


def score(cfg, rt, clf, sample_fn, sess) -> dict:
    """evaluate.score_samples on --fid-samples fresh samples (seeded), at the dataset's own size."""
    if clf is None:
        return {}
    n, chunk = cfg.fid_samples, 250 if cfg.model == "ddpm" else 1000
    with seeded(cfg.seed + 1, rt.device):
        x = torch.cat([sample_fn(min(chunk, n - i)) for i in progress(range(0, n, chunk), desc="samples to score",
                                                                      rt=rt, unit="batch")])
    x = resize(x, native_shape(cfg.dataset)[1])
    s = evaluate.score_samples(x, cfg.dataset, cfg.data_dir, n, clf, rt.device,
                               seed=cfg.seed)
    keep = {k: v for k, v in s.items() if k not in ("dataset", "n")}
    if cfg.inception_fid:  # the published FID beside ours: the same n samples against the same n test images
        real = evaluate.real_images(cfg.dataset, cfg.data_dir, s["n"], cfg.seed)["test"].float() / 255
        keep["inception_fid"] = evaluate.inception_fid(real.to(rt.device), x[:s["n"]].to(rt.device))
    sess.log("score", fid_samples=s["n"], **{k: v for k, v in keep.items() if k != "classifier"})
    return dict(fid_samples=s["n"], **keep)


# The figure's words: what each experiment compares, each model's paper, each arm's change.
WHAT = {"gan_loss": "MLP GAN on MNIST: minimax vs non-saturating generator loss (Goodfellow et al. 2014)",
        "dcgan_beta1": "DCGAN on MNIST: Adam beta1 0.9 vs 0.5 (Radford et al. 2015)"}
MODELS = {"vae": "VAE (Kingma & Welling 2013)", "gan": "MLP GAN (Goodfellow et al. 2014)",
          "dcgan": "DCGAN (Radford et al. 2015)", "ddpm": "DDPM (Ho et al. 2020)"}
ARMS = {"minimax": "minimax G loss (eq. 1)", "nonsaturating": "non-saturating G loss (sec. 3)",
        "beta1_0.9": "Adam beta1 = 0.9", "beta1_0.5": "Adam beta1 = 0.5 (the paper's)"}


def grids_figure(panels: dict, title: str, nrow: int = 8):
    """panels: {label: (n, C, H, W) images in [0, 1]} -> one grid per panel side by side, each titled."""
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.4 * len(panels), 5.4), dpi=120, squeeze=False,
                                  layout="constrained")  # room for the titles, whatever their lines
    for ax, (label, images) in zip(axes[0], panels.items()):
        grid = make_grid(images.float(), nrow=nrow, padding=2, pad_value=1.0)  # (3, H', W'), white gaps
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return fig


def scores(card: dict) -> str:
    """A panel's second line: the yardstick's scores of the arm's samples (evaluate.py), where it has them."""
    if card.get("fcd") is None:
        return "not scored"
    return (f"classifier FID {card['fcd']:.1f}, class entropy {card['class_entropy']:.2f},\n"
            f"{card['confident_fraction']:.0%} classified confidently")


def samples(checkpoint: Path, Config, n: int, seed: int) -> torch.Tensor:
    """n images from a run's checkpoint, from the noise of `seed`, on the CPU: (n, C, H, W) in [0, 1]. As sample.py
    draws them: from the final weights (DDPM: the averaged ones)."""
    state = load_checkpoint(str(checkpoint))
    if state.get("milestone") != MILESTONE:
        raise UserError(f"{checkpoint} is a run of {state.get('milestone') or 'another program'}, not {MILESTONE}")
    cfg, nets = trained_nets(state, Config)
    with seeded(seed, "cpu"):
        return draw(cfg, nets, n, "cpu", diffusion_of(cfg), nets["unet"] if cfg.model == "ddpm" else None)


def trained_nets(state: dict, Config):
    """(config, networks in eval mode with their trained weights) of a loaded 07 checkpoint, its config read into
    `Config` (train.py's); DDPM's weights are the averaged ones, which the paper samples from."""
    names = {f.name for f in dataclasses.fields(Config)}
    cfg = Config(**{k: v for k, v in state.get("config", {}).items() if k in names})
    nets = build(cfg)
    restore({"model": state["model"]}, nets)  # weights only: leave the global RNG alone
    if cfg.model == "ddpm":
        ema = EMA(nets["unet"], cfg.ema_decay)
        ema.load_state_dict(state["ema"])
        ema.copy_to(nets["unet"])
    return cfg, nets.eval()


def side_by_side(run, png, Config, n: int = 64, seed: int = 0) -> Path:
    """One panel per arm of a comparison run (or one for a single run), labelled with its scores; each arm's
    checkpoint is read into a `Config` (train.py's)."""
    run = Path(run)
    card = json.loads((run / "summary.json").read_text())
    cfg = json.loads((run / "config.json").read_text())["config"]
    arms = card.get("arms") or {None: card}
    panels = {}
    for arm, arm_card in arms.items():
        ckpt = run / (f"checkpoint-{arm}.pt" if arm else "checkpoint.pt")
        if not ckpt.is_file():
            raise UserError(f"{ckpt} is missing: the samples are drawn from the run's checkpoints")
        label = f"{ARMS.get(arm, arm)}\n{scores(arm_card)}" if arm else scores(arm_card)
        panels[label] = samples(ckpt, Config, n, seed)
    images = {"mnist": "MNIST"}.get(card["dataset"], card["dataset"])
    what = WHAT.get(cfg["experiment"], f"{MODELS.get(cfg['model'], cfg['model'])}, {card['model']}, on {images}: "
                    + ("pixel means E[x|z], z ~ N(0, I)" if cfg["model"] == "vae" else "samples"))
    steps = next(iter(arms.values()))["steps"]
    epochs = next(iter(arms.values())).get("epochs")
    budget = f"{steps:,} steps" + (f" ({epochs:g} epochs)" if epochs else "")
    title = (f"{what}\npreset {card['preset']}, {budget}{' each' if len(arms) > 1 else ''}, seed {card['seed']}, "
             f"trained in {card['precision']}; {n} samples from the final weights, noise seed {seed}")
    return save(grids_figure(panels, title), png)
