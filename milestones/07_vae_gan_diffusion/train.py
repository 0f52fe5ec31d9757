"""Train the generators: the VAE (2013), the GAN (2014) and DCGAN (2015), and DDPM (2020).

    python -m milestones train 07_vae_gan_diffusion --model vae --preset quick     # NLL by importance sampling
    python -m milestones train 07_vae_gan_diffusion --model gan --preset quick     # the MLP GAN of the paper's code
    python -m milestones train 07_vae_gan_diffusion --model dcgan --preset quick
    python -m milestones train 07_vae_gan_diffusion --model ddpm --preset quick
    python -m milestones train 07_vae_gan_diffusion --model ddpm --preset paper    # CIFAR-10, 800k steps (GPU)
    python -m milestones train 07_vae_gan_diffusion --experiment gan_loss --preset quick
    python -m milestones sample 07_vae_gan_diffusion --run runs/07_vae_gan_diffusion/<run>

Every run writes sample grids (samples/step_<N>.png, from fixed noise) and ends by scoring its samples on one
yardstick (evaluate.py: classifier FID and KID, the confidently classified share, the class entropy).
"""

import argparse
import contextlib
import copy
import math
import sys
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.utils import save_image

from common import data
from common.config import TrainConfig, arg, parse_sizes, train_command
from common.data.augment import random_hflip
from common.device import seed_everything
from common.errors import UserError
from common.logging import progress
from common.loop import optimizer_step
from common.session import Session, open_run

from . import evaluate
from .diffusion import EMA, Diffusion
from .gan import (DCDiscriminator, DCGenerator, MLPDiscriminator, MLPGenerator, discriminator_loss,
                  generator_loss)
from .unet import UNet, check_size
from .vae import VAE, binarize, elbo, importance_log_likelihood, manifold_grid

MILESTONE = "07_vae_gan_diffusion"
MODELS = ("vae", "gan", "dcgan", "ddpm")
GANS = ("gan", "dcgan")
GRID = 64  # images in every sample grid (8 x 8)


@dataclass
class Config(TrainConfig):
    experiment: str = arg("train", "what to run (the list below)")
    model: str = arg("vae", "the generator to train", choices=MODELS, only="train")
    dataset: str = arg("mnist", "training images", choices=("mnist", "fashion_mnist", "cifar10"),
                       only=("train", "gan_loss", "dcgan_beta1"))
    train_size: int = arg(0, "train on the first N training images only (0 = all; the GAN release used 50,000)")
    fid_samples: int = arg(10000, "samples scored against as many real test images at the end (0 = no scoring)")
    fid_classifier_steps: int = arg(0, "train the yardstick's classifier for this many steps instead of its recipe's "
                                    "(for tests; cached under its own name, never taken for the real one)")
    optimizer: str = arg("adam", "adam; adagrad (the VAE paper's); sgd with momentum (the GAN release's)",
                         choices=("adam", "adagrad", "sgd"))
    beta1: float = arg(0.9, "Adam's beta_1 (DCGAN: 0.5)")
    adam_eps: float = arg(1e-8, "Adam's epsilon (the IWAE code: 1e-4)")
    # the VAE
    z_dim: int = arg(50, "latent dimensions (VAE, GAN, DCGAN)")
    hidden: str = arg("200,200", "hidden layer sizes: the VAE's encoder (its decoder mirrors them) or the MLP "
                      "generator's")
    activation: str = arg("tanh", "VAE hidden units", choices=("tanh", "relu", "softplus"))
    binarize: bool = arg(True, "VAE: draw binary pixels afresh from every batch's intensities; false: grey-level "
                         "targets (pytorch/examples)")
    schedule: str = arg("constant", "VAE learning rate: constant, cosine over the run, or iwae (Burda et al.: "
                        "3^i epochs at lr * 10^(-i/7))", choices=("constant", "cosine", "iwae"))
    iw_samples: int = arg(5000, "importance samples k per test image for the VAE's log-likelihood (0 = skip)")
    test_size: int = arg(10000, "test images used by the VAE's ELBO and NLL and DDPM's test loss")
    # the GANs
    d_steps: int = arg(1, "discriminator steps k per generator step (Algorithm 1; the paper's k = 1)")
    g_loss: str = arg("nonsaturating", "what G minimises: minimax log(1 - D(G(z))) (eq. 1) or nonsaturating "
                      "-log D(G(z)) (section 3)", choices=("nonsaturating", "minimax"))
    momentum: float = arg(0.5, "SGD momentum at the start (the GAN release: 0.5, rising linearly to "
                          "--final-momentum over 250 epochs)")
    final_momentum: float = arg(0.7, "SGD momentum from epoch 250 on")
    lr_decay: float = arg(1.000004, "SGD: the learning rate is divided by this after every update (floor 1e-6)")
    gan_update: str = arg("alternating", "alternating: Algorithm 1 (D's step, then G's on fresh noise against the "
                          "updated D); simultaneous: the release's AdversaryCost2 (both gradients from one batch of "
                          "samples, one pass through D with the same dropout masks, both nets updated at once; k = 1)",
                          choices=("alternating", "simultaneous"))
    width: int = arg(64, "DCGAN: channels of the layer next to the image (the paper's 128), doubling per stage")
    image_size: int = arg(0, "DCGAN / DDPM: train at this side length, resizing the images (0 = the dataset's)")
    # DDPM
    ch: int = arg(128, "DDPM U-Net base channels")
    ch_mult: str = arg("1,2,2,2", "DDPM U-Net channel multiplier per resolution")
    num_res_blocks: int = arg(2, "DDPM residual blocks per resolution")
    attn: str = arg("16", "DDPM: side lengths with self-attention, comma-separated ('' = only in the middle)")
    dropout: float = arg(0.1, "DDPM dropout in the residual blocks")
    timesteps: int = arg(1000, "DDPM diffusion steps T; the linear schedule runs from 1e-4 to 0.02 at T = 1000 "
                         "and is scaled by 1000/T otherwise (same total noise)")
    warmup_steps: int = arg(5000, "DDPM: learning rate rises linearly over this many steps")
    ema_decay: float = arg(0.9999, "DDPM: decay of the weight average we sample from")
    clip: float = arg(1.0, "DDPM: clip the gradient norm to this")
    clip_denoised: bool = arg(True, "DDPM sampling: clip each step's estimate of x_0 to [-1, 1], as the released "
                              "code's sampler does; false: Algorithm 2 exactly")


# Which flags mean something for which model; giving one to another model is a mistake worth saying.
FOR_MODEL = dict(z_dim=("vae", "gan", "dcgan"), hidden=("vae", "gan"), activation=("vae",), binarize=("vae",),
                 schedule=("vae",), iw_samples=("vae",), test_size=("vae", "ddpm"), d_steps=GANS, g_loss=GANS,
                 momentum=("gan",), final_momentum=("gan",), lr_decay=("gan",), gan_update=("gan",), width=("dcgan",),
                 image_size=("dcgan", "ddpm"), **{k: ("ddpm",) for k in (
                     "ch", "ch_mult", "num_res_blocks", "attn", "dropout", "timesteps", "warmup_steps",
                     "ema_decay", "clip", "clip_denoised")})
OPTIMIZERS = {"vae": ("adam", "adagrad"), "gan": ("sgd", "adam"), "dcgan": ("adam", "sgd"), "ddpm": ("adam",)}

# Each model's recipe per preset. `train/<preset>` takes the recipe of --model (model_presets below); the
# comparisons take the GAN's and DCGAN's, vae_examples its own.
VAE_NET = dict(hidden="200,200", z_dim=50, activation="tanh")  # Burda et al.'s one-stochastic-layer model
RECIPES = {
    "vae": {
        # Burda et al. 2015's training: Adam (eps 1e-4), batch 20, 3^i epochs at 1e-3 * 10^(-i/7), i = 0..7
        "paper": dict(VAE_NET, optimizer="adam", lr=1e-3, adam_eps=1e-4, batch_size=20, schedule="iwae",
                      epochs=3280, eval_every=30000, iw_samples=5000),
        "default": dict(VAE_NET, optimizer="adam", lr=1e-3, batch_size=100, schedule="cosine", epochs=200,
                        eval_every=6000, iw_samples=5000),
        "quick": dict(VAE_NET, optimizer="adam", lr=2e-3, batch_size=100, schedule="cosine", epochs=60,
                      eval_every=6000, iw_samples=1000, fid_samples=1000),
        "smoke": dict(hidden="32", z_dim=4, optimizer="adam", lr=1e-3, batch_size=32, steps=12, eval_every=6,
                      test_size=64, iw_samples=8, fid_samples=0, ckpt_every=5),
    },
    "gan": {
        # goodfeli/adversarial mnist.yaml: 50,000 digits, batch 100, SGD lr 0.1 / 1.000004 per update, momentum
        # 0.5 -> 0.7 over 250 epochs; the release sets no stopping rule (250 epochs: when the momentum settles)
        "paper": dict(hidden="1200,1200", z_dim=100, optimizer="sgd", lr=0.1, batch_size=100, train_size=50000,
                      epochs=250, eval_every=25000),
        "default": dict(hidden="1200,1200", z_dim=100, optimizer="sgd", lr=0.1, batch_size=100, epochs=100,
                        eval_every=10000),
        "quick": dict(hidden="1200,1200", z_dim=100, optimizer="sgd", lr=0.1, batch_size=100, epochs=5,
                      eval_every=1000, fid_samples=1000),
        "smoke": dict(hidden="32", z_dim=8, optimizer="sgd", lr=0.1, batch_size=16, steps=8, eval_every=4,
                      fid_samples=0, ckpt_every=3),
    },
    "dcgan": {
        # Radford et al.: Adam lr 2e-4, beta_1 0.5, batch 128; the released code trains 25 epochs
        "paper": dict(z_dim=100, optimizer="adam", lr=2e-4, beta1=0.5, batch_size=128, width=128, epochs=25,
                      eval_every=2000),
        "default": dict(z_dim=100, optimizer="adam", lr=2e-4, beta1=0.5, batch_size=128, width=64, epochs=25,
                        eval_every=2000),
        "quick": dict(z_dim=100, optimizer="adam", lr=2e-4, beta1=0.5, batch_size=128, width=32, epochs=8,
                      eval_every=936, fid_samples=1000),
        "smoke": dict(z_dim=8, optimizer="adam", lr=2e-4, beta1=0.5, batch_size=16, width=4, steps=6,
                      eval_every=3, fid_samples=0, ckpt_every=3),
    },
    "ddpm": {
        # Ho et al. 2020, CIFAR-10: the 35.7M U-Net, T = 1000, Adam 2e-4, batch 128, 5000 warm-up steps, EMA 0.9999,
        # gradient clip 1, random flips, 800k steps
        "paper": dict(dataset="cifar10", ch=128, ch_mult="1,2,2,2", num_res_blocks=2, attn="16", dropout=0.1,
                      timesteps=1000, optimizer="adam", lr=2e-4, batch_size=128, warmup_steps=5000,
                      ema_decay=0.9999, steps=800_000, eval_every=20000, ckpt_every=5000),
        "default": dict(ch=64, ch_mult="1,2,2", num_res_blocks=2, attn="14", dropout=0.1, timesteps=1000,
                        optimizer="adam", lr=2e-4, batch_size=128, warmup_steps=1000, ema_decay=0.9995,
                        steps=30000, eval_every=5000, test_size=2000),
        # a CPU budget: a 24-channel U-Net (at 16, GroupNorm's groups hold one channel each: NOTES.md), a 100-step
        # chain, bf16 autocast where the CPU has it natively (auto: 1.5x faster with AVX512-BF16; emulated on
        # AVX2 it is 10x slower, so fp32 there), EMA 0.995
        "quick": dict(ch=24, ch_mult="1,2,2", num_res_blocks=1, attn="", dropout=0.0, timesteps=100,
                      optimizer="adam", lr=1e-3, batch_size=64, warmup_steps=100, ema_decay=0.995, precision="auto",
                      steps=1500, eval_every=750, test_size=500, fid_samples=1000),
        "smoke": dict(ch=8, ch_mult="1,2", num_res_blocks=1, attn="", dropout=0.1, timesteps=25, image_size=8,
                      optimizer="adam", lr=1e-3, batch_size=8, warmup_steps=2, ema_decay=0.9, steps=6,
                      eval_every=3, test_size=16, fid_samples=0, ckpt_every=3),
    },
    # pytorch/examples' VAE: 784-400-20 ReLU, grey-level targets, Adam 1e-3, batch 128, 10 epochs
    "vae_examples": {p: dict(hidden="400", z_dim=20, activation="relu", binarize=False, optimizer="adam", lr=1e-3,
                             batch_size=128, epochs=10, iw_samples=0, fid_samples=1000 if p == "quick" else 10000)
                     for p in ("paper", "default", "quick")},
}
RECIPES["vae_examples"]["smoke"] = dict(RECIPES["vae"]["smoke"], activation="relu", binarize=False, iw_samples=0)


def model_presets(argv) -> dict:
    """The presets, with the recipe of the requested --model in train/<preset> (a preset cannot see the flags,
    so the model is read from the command line here, as 05 reads --size)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model")
    known, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    model = known.model if known.model in MODELS else "vae"
    presets = {}
    for name in ("paper", "default", "quick", "smoke"):
        presets[f"train/{name}"] = dict(RECIPES[model][name])
        presets[f"gan_loss/{name}"] = dict(RECIPES["gan"][name], model="gan")
        presets[f"dcgan_beta1/{name}"] = dict(RECIPES["dcgan"][name], model="dcgan")
        presets[f"vae_examples/{name}"] = dict(RECIPES["vae_examples"][name], model="vae")
    return presets


def check(cfg: Config, argv) -> None:
    """What argparse cannot say: flags given for another model, and values out of range."""
    given = {a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")}
    for name, models in FOR_MODEL.items():
        if "--" + name.replace("_", "-") in given and cfg.model not in models:
            raise UserError(f"--{name.replace('_', '-')} is for --model {' or '.join(models)}, not {cfg.model}")
    if cfg.optimizer not in OPTIMIZERS[cfg.model]:
        raise UserError(f"--optimizer {cfg.optimizer} is not a {cfg.model} recipe; use "
                        f"{' or '.join(OPTIMIZERS[cfg.model])}")
    if cfg.model == "vae" and cfg.dataset == "cifar10":
        raise UserError("the VAE's decoder is Bernoulli (binary pixels): use --dataset mnist or fashion_mnist")
    for name in ("z_dim", "d_steps", "width", "ch", "num_res_blocks", "test_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    for name in ("fid_samples", "iw_samples", "train_size", "image_size", "warmup_steps", "fid_classifier_steps"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if cfg.fid_samples == 1:
        raise UserError("--fid-samples must be 0 (no scoring) or at least 2")
    if cfg.model == "ddpm" and cfg.timesteps < 21:
        raise UserError(f"--timesteps must be at least 21 (beta_T = 0.02 * 1000 / T must stay below 1), "
                        f"got {cfg.timesteps}")
    if not 0 <= cfg.ema_decay < 1 or not 0 <= cfg.dropout < 1:
        raise UserError("--ema-decay and --dropout must be in [0, 1)")


# ---------------------------------------------------------------------------------------------------------
# Data, networks, samples: shared by the four recipes and by sample.py
# ---------------------------------------------------------------------------------------------------------

def native_shape(dataset: str) -> tuple[int, int, int]:
    return (3, 32, 32) if dataset == "cifar10" else (1, 28, 28)


def image_shape(cfg) -> tuple[int, int, int]:
    """(C, H, W) the model sees: the dataset's, or --image-size for DCGAN and DDPM."""
    c, h, _ = native_shape(cfg.dataset)
    side = cfg.image_size if cfg.model in ("dcgan", "ddpm") and cfg.image_size else h
    return c, side, side


def resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Images (N, C, H, W), uint8 or float in [0, 1], to side x side (bilinear, antialiased), same dtype."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    out = []
    for chunk in x.split(4096):
        y = F.interpolate(chunk.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.clamp(0, 1))
    return torch.cat(out)


def load_images(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and test images, uint8 (N, C, H, W) on the CPU, at the size the model trains on."""
    splits = data.load(cfg.dataset, cfg.data_dir)
    x_train, x_test = splits["train"][0], splits["test"][0]
    if cfg.train_size:
        x_train = x_train[:cfg.train_size]
    side = image_shape(cfg)[1]
    return resize(x_train, side), resize(x_test, side)


def diffusion_of(cfg) -> Diffusion:
    """The paper's linear schedule (1e-4 to 0.02 over T = 1000), stretched to cfg.timesteps steps."""
    scale = 1000 / cfg.timesteps
    return Diffusion(cfg.timesteps, 1e-4 * scale, 0.02 * scale)


def build(cfg) -> nn.ModuleDict:
    """The networks of cfg.model, in one ModuleDict (what checkpoints hold): vae | G, D | unet."""
    c, side, _ = shape = image_shape(cfg)
    if cfg.model == "vae":
        return nn.ModuleDict(dict(vae=VAE(math.prod(shape), parse_sizes(cfg.hidden, "--hidden"), cfg.z_dim,
                                          cfg.activation)))
    if cfg.model == "gan":
        return nn.ModuleDict(dict(G=MLPGenerator(cfg.z_dim, parse_sizes(cfg.hidden, "--hidden"), shape),
                                  D=MLPDiscriminator(math.prod(shape))))
    if cfg.model == "dcgan":
        return nn.ModuleDict(dict(G=DCGenerator(cfg.z_dim, side, c, cfg.width), D=DCDiscriminator(side, c, cfg.width)))
    mult = parse_sizes(cfg.ch_mult, "--ch-mult")
    check_size(side, side, len(mult))
    attn = parse_sizes(cfg.attn, "--attn") if cfg.attn.strip() else []
    return nn.ModuleDict(dict(unet=UNet(c, cfg.ch, mult, cfg.num_res_blocks, attn, cfg.dropout, side)))


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


class Both:
    """Two optimizers (or schedulers, or scalers) saved and restored as one: {name: state_dict}."""

    def __init__(self, **parts):
        self.parts = parts

    def state_dict(self) -> dict:
        return {k: v.state_dict() for k, v in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, v in self.parts.items():
            v.load_state_dict(state[k])


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
    if not cfg.fid_samples or not rt.is_main:
        return None
    return evaluate.load_or_train_classifier(cfg.dataset, cfg.data_dir, rt.device, cfg.fid_classifier_steps or None)


def score(cfg, rt, clf, sample_fn, sess) -> dict:
    """evaluate.score_samples on --fid-samples fresh samples (seeded), at the dataset's own size."""
    if clf is None:
        return {}
    n, chunk = cfg.fid_samples, 250 if cfg.model == "ddpm" else 1000
    with seeded(cfg.seed + 1, rt.device):
        x = torch.cat([sample_fn(min(chunk, n - i)) for i in progress(range(0, n, chunk), desc="samples to score",
                                                                      rt=rt, unit="batch")])
    s = evaluate.score_samples(resize(x, native_shape(cfg.dataset)[1]), cfg.dataset, cfg.data_dir, n, clf, rt.device,
                               seed=cfg.seed)
    keep = {k: v for k, v in s.items() if k not in ("dataset", "n")}
    sess.log("score", fid_samples=s["n"], **{k: v for k, v in keep.items() if k != "classifier"})
    return dict(fid_samples=s["n"], **keep)


# ---------------------------------------------------------------------------------------------------------
# The VAE (Kingma & Welling 2013)
# ---------------------------------------------------------------------------------------------------------

def iwae_lr(epoch: int) -> float:
    """Burda et al.'s schedule: 3^i epochs at 10^(-i/7) times the initial rate, i = 0..7 (3,280 epochs)."""
    i, end = 0, 1
    while epoch >= end and i < 7:
        i += 1
        end += 3 ** i
    return 10 ** (-i / 7)


@torch.no_grad()
def test_bound(model, x_test, rt, cfg, k: int = 0) -> float:
    """Mean ELBO (k = 0) or k-sample estimate of log p(x) (Burda et al.'s L_k) over the test images, in nats.
    The test set is binarised once with a fixed seed, so every evaluation and both bounds see the same digits."""
    was = model.training
    model.eval()
    total, batch = 0.0, 100 if k else 1000
    with seeded(cfg.seed, rt.device):
        x_all = binarize(x_test) if cfg.binarize else x_test.float() / 255  # (N, 1, 28, 28) on the CPU
        steps = range(0, len(x_all), batch)
        for i in progress(steps, desc=f"log p(x), k={k}", rt=rt, unit="batch") if k else steps:
            x = x_all[i:i + batch].to(rt.device)
            total += float((importance_log_likelihood(model, x, k) if k else elbo(model, x)).sum())
    model.train(was)
    return total / len(x_test)


def train_vae(cfg, rt, run, clf, arm=None):
    """Minimise -ELBO (eq. 10, L = 1) on freshly binarised batches; returns (session, card fields)."""
    nets = build(cfg).to(rt.device)
    model = nets["vae"]
    x_train, x_test = load_images(cfg)
    x_test = x_test[:cfg.test_size]
    train = data.TensorLoader(x_train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, device=rt.device,
                              seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    total = cfg.steps or cfg.epochs * len(train)
    opt = make_optimizer(cfg, model.parameters())
    per_epoch = len(train)
    lam = {"constant": lambda s: 1.0, "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)),
           "iwae": lambda s: iwae_lr(s // per_epoch)}[cfg.schedule]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    scaler = rt.grad_scaler()
    sess = session(cfg, rt, run, total, per_epoch, arm)
    sess.attach(nets, opt, sched, scaler, resume=arm is None)
    net = rt.wrap(model, compile=cfg.compile)
    prepare = binarize if cfg.binarize else (lambda x: x.float() / 255)
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for (x,) in train.batches(epoch, start):
                x = prepare(x.to(rt.device, non_blocking=True))  # a fresh binarisation every time (B, 1, 28, 28)
                with rt.autocast():
                    loss = -elbo(net, x).mean()  # -[E_q log p(x|z) - KL(q(z|x) || p(z))], nats per image
                optimizer_step(loss, opt, scaler)
                sched.step()
                sess.step(cfg.batch_size)
                if sess.due("log"):
                    sess.log("train", loss=loss, lr=sched.get_last_lr()[0])
                if sess.due("eval") and rt.is_main:
                    sess.log("test", elbo=test_bound(model, x_test, rt, cfg))
                    with seeded(cfg.seed, rt.device):
                        grid = draw(cfg, nets, GRID, rt.device)
                    save_grid(grid, samples_dir(run, arm) / f"step_{sess.step_count}.png")
                if not sess.running:
                    break
    elbo_test = sess.results.get("test_elbo")
    card = dict(dataset=cfg.dataset, test_elbo=elbo_test, metric="test_loss (-ELBO)", paper_value=None,
                paper_source=None, value=-elbo_test if elbo_test is not None else None)
    if cfg.iw_samples:
        nll = -test_bound(model, x_test, rt, cfg, k=cfg.iw_samples) if rt.is_main else None
        if rt.is_main:
            sess.log("test", nll=nll, iw_samples=cfg.iw_samples)
        burda = (cfg.dataset == "mnist" and cfg.binarize and model.hidden == (200, 200) and model.z_dim == 50
                 and cfg.activation == "tanh")
        card.update(metric="test_nll", value=nll, iw_samples=cfg.iw_samples, test_images=len(x_test),
                    paper_value=86.76 if burda else None,
                    paper_source="Burda et al. 2015, Table 1: VAE, 784-200-200-50, k=1 training, k=5000 test "
                                 "(stochastically binarised MNIST)" if burda else None)
    if rt.is_main and model.z_dim == 2:
        save_grid(manifold_grid(model, 20), run.dir / "manifold.png", nrow=20)  # the paper's Figure 4
    card.update(score(cfg, rt, clf, lambda n: draw(cfg, nets, n, rt.device), sess))
    return sess, card


# ---------------------------------------------------------------------------------------------------------
# GAN (Goodfellow et al. 2014) and DCGAN (Radford et al. 2015)
# ---------------------------------------------------------------------------------------------------------

def train_gan(cfg, rt, run, clf, arm=None):
    """Algorithm 1: k steps of D ascending V(D, G), then one step of G; one session step = one G step."""
    nets = build(cfg).to(rt.device)
    G, D = nets["G"], nets["D"]
    x_train, x_test = load_images(cfg)
    if cfg.model == "gan":
        G.init_output_bias(x_train.float().mean(0) / 255)  # start G at the pixel marginals, as the release does
    scale = (lambda x: x.float() / 255) if cfg.model == "gan" else (lambda x: x.float() / 127.5 - 1)  # DCGAN: [-1, 1]
    train = data.TensorLoader(x_train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, device=rt.device,
                              seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    k = cfg.d_steps
    if cfg.gan_update == "simultaneous" and k != 1:
        raise UserError(f"--gan-update simultaneous takes one batch for both nets: --d-steps must be 1, got {k}")
    per_epoch = len(train) // k
    total = cfg.steps or cfg.epochs * per_epoch
    opt_d, opt_g = make_optimizer(cfg, D.parameters()), make_optimizer(cfg, G.parameters())
    decay = (lambda s: max(cfg.lr_decay ** -s, 1e-6 / cfg.lr)) if cfg.optimizer == "sgd" else (lambda s: 1.0)
    sched_d, sched_g = (torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_d, opt_g))
    scaler_d, scaler_g = rt.grad_scaler(), rt.grad_scaler()
    sess = session(cfg, rt, run, total, per_epoch, arm)
    sess.attach(nets, Both(D=opt_d, G=opt_g), Both(D=sched_d, G=sched_g), Both(D=scaler_d, G=scaler_g),
                resume=arm is None)
    g, d = rt.wrap(G, compile=cfg.compile), rt.wrap(D, compile=cfg.compile)
    b = train.local_batch
    with sess:
        while sess.running:
            epoch, start = sess.position()
            if cfg.optimizer == "sgd":  # momentum 0.5 at epoch 1 rising linearly to 0.7 at epoch 250 (the release)
                m = cfg.momentum + (cfg.final_momentum - cfg.momentum) * min(max(epoch / 249, 0.0), 1.0)
                for group in opt_d.param_groups + opt_g.param_groups:
                    group["momentum"] = m
            batches = train.batches(epoch, start * k)
            for _ in range(start, per_epoch):
                if cfg.gan_update == "simultaneous":  # the release: one batch, one pass, both nets updated at once
                    (x,) = next(batches)
                    x = scale(x.to(rt.device, non_blocking=True))  # (B, C, H, W)
                    with rt.autocast():
                        real, fake = d(x), d(g(G.noise(b)))  # D's logits on the fakes serve both objectives
                    loss_d = discriminator_loss(real, fake)  # -[log D(x) + log(1 - D(G(z)))]
                    loss_g = generator_loss(fake, cfg.g_loss)
                    simultaneous_step((0.5 * loss_d, D, opt_d, scaler_d), (loss_g, G, opt_g, scaler_g))
                for _ in range(k if cfg.gan_update == "alternating" else 0):  # k discriminator steps, each on a fresh minibatch of data and of noise
                    (x,) = next(batches)
                    x = scale(x.to(rt.device, non_blocking=True))  # (B, C, H, W)
                    with rt.autocast():
                        real, fake = d(x), d(g(G.noise(b)).detach())
                    loss_d = discriminator_loss(real, fake)  # -[log D(x) + log(1 - D(G(z)))]
                    optimizer_step(0.5 * loss_d, opt_d, scaler_d)  # halved, as the release's cost does
                if cfg.gan_update == "alternating":
                    with rt.autocast():
                        fake_g = d(g(G.noise(b)))
                    loss_g = generator_loss(fake_g, cfg.g_loss)  # log(1 - D(G(z))) or -log D(G(z))
                    optimizer_step(loss_g, opt_g, scaler_g)
                sched_d.step()
                sched_g.step()
                sess.step(cfg.batch_size * k)
                if sess.due("log"):
                    sess.log("train", loss=loss_g, d_loss=loss_d, d_real=torch.sigmoid(real.float()).mean(),
                             d_fake=torch.sigmoid(fake.float()).mean(), lr=sched_g.get_last_lr()[0])
                if sess.due("eval") and rt.is_main:
                    sess.log("test", **eval_gan(cfg, rt, nets, scale(x_test[:1000].to(rt.device))))
                    with seeded(cfg.seed, rt.device):
                        grid = draw(cfg, nets, GRID, rt.device)
                    save_grid(grid, samples_dir(run, arm) / f"step_{sess.step_count}.png")
                if not sess.running:
                    break
    card = dict(dataset=cfg.dataset, metric="classifier_fid", paper_value=None,
                paper_source="no published number on this yardstick (the paper: a Parzen-window log-likelihood, "
                             "225 nats on MNIST, which Theis et al. 2016 show is not a measure of the model)"
                if cfg.model == "gan" else "no published number on this yardstick (the paper reports none for MNIST)")
    card.update(score(cfg, rt, clf, lambda n: draw(cfg, nets, n, rt.device), sess))
    card["value"] = card.get("fcd")
    return sess, card


def simultaneous_step(*parts) -> None:
    """One update of several nets, each by the gradient of its own loss w.r.t. its own parameters only, all taken
    at the same (pre-update) parameters: parts are (loss, net, optimizer, scaler)."""
    grads = [torch.autograd.grad(scaler.scale(loss), list(net.parameters()), retain_graph=True)
             for loss, net, _, scaler in parts]  # every gradient before any update: the graph still holds
    for (_, net, opt, scaler), gs in zip(parts, grads):
        for p, g in zip(net.parameters(), gs):
            p.grad = g
        scaler.step(opt)
        scaler.update()


@torch.no_grad()
def eval_gan(cfg, rt, nets, x_test) -> dict:
    """D's mean output on real test images and on fresh samples: how sure D is, and whether it still tells them
    apart."""
    with judging(cfg, nets["G"]) as G, judging(cfg, nets["D"]) as D, seeded(cfg.seed + 2, rt.device):
        fake = G(G.noise(len(x_test), rt.device))
        return dict(d_real=float(torch.sigmoid(D(x_test).float()).mean()),
                    d_fake=float(torch.sigmoid(D(fake).float()).mean()))


# ---------------------------------------------------------------------------------------------------------
# DDPM (Ho, Jain & Abbeel 2020)
# ---------------------------------------------------------------------------------------------------------

def train_ddpm(cfg, rt, run, clf, arm=None):
    """Algorithm 1: L_simple (eq. 14) at a uniformly drawn t, Adam with warm-up, clipping, and a weight average."""
    nets = build(cfg).to(rt.device)
    model = nets["unet"]
    x_train, x_test = load_images(cfg)
    x_test = x_test[:cfg.test_size]
    diffusion = diffusion_of(cfg)
    ema = EMA(model, cfg.ema_decay)
    ema_net = copy.deepcopy(model).eval().requires_grad_(False)  # the averaged weights, for sampling
    train = data.TensorLoader(x_train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, device=rt.device,
                              seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    total = cfg.steps or cfg.epochs * len(train)
    opt = make_optimizer(cfg, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / max(cfg.warmup_steps, 1), 1.0))
    scaler = rt.grad_scaler()
    sess = session(cfg, rt, run, total, len(train), arm)
    state = sess.attach(nets, opt, sched, scaler, extra=lambda: dict(ema=ema.state_dict()), resume=arm is None)
    if "ema" in state:
        ema.load_state_dict(state["ema"])
    net = rt.wrap(model, compile=cfg.compile)
    flip = cfg.dataset == "cifar10"  # the paper's random horizontal flips, for CIFAR-10 only
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for (x,) in train.batches(epoch, start):
                x0 = x.to(rt.device, non_blocking=True).float() / 127.5 - 1  # [-1, 1], (B, C, H, W)
                if flip:
                    x0 = random_hflip(x0)
                with rt.autocast():
                    loss = diffusion.loss(net, x0)  # || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2
                optimizer_step(loss, opt, scaler, clip=cfg.clip, params=model.parameters())
                sched.step()
                ema.update()
                sess.step(cfg.batch_size)
                if sess.due("log"):
                    sess.log("train", loss=loss, lr=sched.get_last_lr()[0])
                if sess.due("eval") and rt.is_main:
                    ema.copy_to(ema_net)
                    sess.log("test", loss=ddpm_test_loss(cfg, rt, diffusion, ema_net, x_test))
                    with seeded(cfg.seed, rt.device):
                        grid = draw(cfg, nets, GRID, rt.device, diffusion, ema_net, rt)
                    save_grid(grid, samples_dir(run, arm) / f"step_{sess.step_count}.png")
                if not sess.running:
                    break
    ema.copy_to(ema_net)
    card = dict(dataset=cfg.dataset, metric="classifier_fid", paper_value=None, test_loss=sess.results.get("test_loss"),
                timesteps=cfg.timesteps,
                paper_source="no published number on this yardstick (the paper: Inception FID 3.17 on CIFAR-10, "
                             "not comparable)")
    card.update(score(cfg, rt, clf, lambda n: draw(cfg, nets, n, rt.device, diffusion, ema_net, rt), sess))
    card["value"] = card.get("fcd")
    return sess, card


@torch.no_grad()
def ddpm_test_loss(cfg, rt, diffusion, net, x_test) -> float:
    """L_simple of the averaged weights on the test images, at fixed draws of t and eps."""
    total = 0.0
    with seeded(cfg.seed, rt.device):
        for i in range(0, len(x_test), 250):
            x0 = x_test[i:i + 250].to(rt.device).float() / 127.5 - 1
            with rt.autocast():
                total += float(diffusion.loss(net, x0)) * len(x0)
    return total / len(x_test)


# ---------------------------------------------------------------------------------------------------------
# Experiments
# ---------------------------------------------------------------------------------------------------------

TRAINERS = {"vae": train_vae, "gan": train_gan, "dcgan": train_gan, "ddpm": train_ddpm}
SCORES = ("fcd", "kid", "kid_std", "fcd_real", "kid_real", "confident_fraction", "class_entropy",
          "confident_fraction_real", "class_entropy_real", "classifier", "classifier_accuracy", "fid_samples")


def model_name(cfg) -> str:
    if cfg.model == "vae":
        return f"vae-{cfg.hidden.replace(',', '-')}-{cfg.z_dim}-{cfg.activation}"
    if cfg.model == "gan":
        return "gan-mlp-maxout"
    if cfg.model == "dcgan":
        return f"dcgan-w{cfg.width}"
    return f"ddpm-unet{cfg.ch}-T{cfg.timesteps}"


def report(name: str, card: dict, rt) -> None:
    if not rt.is_main:
        return
    shown = ", ".join(f"{k} {card[k]:.4g}" for k in ("test_elbo", "fcd", "fcd_real", "kid", "confident_fraction",
                                                     "class_entropy") if isinstance(card.get(k), float))
    value = f"{card['metric']} {card['value']:.4g}" if isinstance(card.get("value"), float) else "not scored"
    paper = f" (paper: {card['paper_value']})" if card.get("paper_value") else ""
    print(f"{name}: {value}{paper}; {shown}; {card.get('train_seconds', 0):.0f} s")


def run_train(cfg: Config, rt, argv) -> dict:
    """train --model (vae, gan, dcgan or ddpm) with its paper's recipe, then score its samples"""
    check(cfg, argv)
    clf = load_classifier(cfg, rt)
    run = open_run(cfg, rt, MILESTONE, model_name(cfg), argv)
    sess, card = TRAINERS[cfg.model](cfg, rt, run, clf)
    card = sess.summary(**card)
    report(model_name(cfg), card, rt)
    if rt.is_main:
        print(f"sample grids: {run.dir / 'samples'}; run record: {run.dir}")
    return card


def compare(cfg: Config, rt, argv, name: str, arms: dict) -> dict:
    """Train one model per arm (same budget, same seed) into one run directory; the card has every arm."""
    if cfg.resume:
        raise UserError(f"--experiment {cfg.experiment} trains its arms from scratch; --resume is for "
                        f"--experiment train")
    check(cfg, argv)
    clf = load_classifier(cfg, rt)
    run = open_run(cfg, rt, MILESTONE, name, argv)
    cards = {}
    for arm, changes in arms.items():
        seed_everything(cfg.seed)  # every arm starts from the same weights and sees the same batches
        sess, card = TRAINERS[cfg.model](replace(cfg, **changes), rt, run, clf, arm=arm)
        sess.finish()
        cards[arm] = {**sess.card(), **{k: v for k, v in card.items() if k in SCORES}}
        report(f"{name} [{arm}]", {**card, **sess.card()}, rt)
    first = next(iter(cards.values()))
    headline = ("fcd", "kid", "confident_fraction", "class_entropy")
    flat = {f"{arm}_{k}": v for arm, c in cards.items() for k, v in c.items() if k in headline}
    last = list(cards)[-1]
    summary = run.summary(
        model=name, dataset=cfg.dataset, metric=f"classifier_fid ({last})", value=cards[last].get("fcd"),
        paper_value=None, paper_source=None, params=first["params"],
        train_seconds=round(sum(c["train_seconds"] for c in cards.values()), 2),
        examples_per_second=round(sum(c["examples_per_second"] for c in cards.values()) / len(cards), 1),
        steps=sum(c["steps"] for c in cards.values()), fcd_real=first.get("fcd_real"), arms=cards, **flat)
    if rt.is_main:
        print(f"sample grids: {run.dir / 'samples'}/<arm>; run record: {run.dir}")
    return summary


def run_gan_loss(cfg: Config, rt, argv) -> dict:
    """the MLP GAN twice at one budget: eq. 1's minimax generator loss vs section 3's non-saturating one"""
    return compare(replace(cfg, model="gan"), rt, argv, "gan-minimax-vs-nonsaturating",
                   {"minimax": dict(g_loss="minimax"), "nonsaturating": dict(g_loss="nonsaturating")})


def run_dcgan_beta1(cfg: Config, rt, argv) -> dict:
    """DCGAN twice at one budget: Adam beta_1 0.5 (the paper's) vs the default 0.9 it found unstable"""
    return compare(replace(cfg, model="dcgan"), rt, argv, "dcgan-beta1-0.9-vs-0.5",
                   {"beta1_0.9": dict(beta1=0.9), "beta1_0.5": dict(beta1=0.5)})


def run_vae_examples(cfg: Config, rt, argv) -> dict:
    """pytorch/examples' VAE (784-400-20 ReLU, grey-level targets, 10 epochs): its loss is not an NLL"""
    cfg = replace(cfg, model="vae")
    check(cfg, argv)
    clf = load_classifier(cfg, rt)
    run = open_run(cfg, rt, MILESTONE, "vae-examples-400-20-relu-grey", argv)
    sess, card = train_vae(cfg, rt, run, clf)
    card.update(paper_value=None, paper_source="pytorch/examples vae/main.py's recipe; its README states no number. "
                "The loss is BCE on grey targets + KL per image: not a log-likelihood")
    card = sess.summary(**card)
    report("vae-examples", card, rt)
    return card


EXPERIMENTS = {"train": run_train, "gan_loss": run_gan_loss, "dcgan_beta1": run_dcgan_beta1,
               "vae_examples": run_vae_examples}


def main(argv=None, prog="python -m milestones train 07_vae_gan_diffusion"):
    return train_command(Config, model_presets(argv), EXPERIMENTS, argv, prog, __doc__, MILESTONE)


if __name__ == "__main__":
    main()
