"""The four generators of this chapter, by --model, each built from a run's config. Each family's networks live
in their own file, beside the equations they implement:

    vae    vae.py        Kingma & Welling 2013: MLP encoder, Bernoulli decoder, the ELBO
    gan    gan.py        Goodfellow et al. 2014: the MLP generator and maxout discriminator of the release
    dcgan  gan.py        Radford et al. 2015: the convolutional generator and discriminator
    ddpm   unet.py       Ho et al. 2020: the U-Net that predicts the noise, and
           diffusion.py  the forward process, the simple loss (eq. 14) and the samplers

`build(cfg)` returns a run's networks in one ModuleDict (what checkpoints hold): vae | G, D | unet.
"""

import math

import torch.nn as nn

from common.config import parse_sizes

from .diffusion import Diffusion
from .gan import DCDiscriminator, DCGenerator, MLPDiscriminator, MLPGenerator
from .unet import UNet, check_size
from .vae import VAE

MODELS = ("vae", "gan", "dcgan", "ddpm")


def native_shape(dataset: str) -> tuple[int, int, int]:
    return (3, 32, 32) if dataset == "cifar10" else (1, 28, 28)


def image_shape(cfg) -> tuple[int, int, int]:
    """(C, H, W) the model sees: the dataset's, or --image-size for DCGAN and DDPM; RGB and 64 x 64 unless
    --image-size says otherwise for an --image-dir (DCGAN's paper size)."""
    if getattr(cfg, "image_dir", ""):
        side = cfg.image_size or 64
        return 3, side, side
    c, h, _ = native_shape(cfg.dataset)
    side = cfg.image_size if cfg.model in ("dcgan", "ddpm") and cfg.image_size else h
    return c, side, side


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
