"""Draw images from a trained 07 run: a sample grid, a walk through the latent space, or DDPM's denoising chain.

    python -m milestones sample 07_vae_gan_diffusion --run runs/07_vae_gan_diffusion/<run> --n 64 --seed 1
    python -m milestones sample 07_vae_gan_diffusion --run <a vae, gan or dcgan run> --interpolate
    python -m milestones sample 07_vae_gan_diffusion --run <a ddpm run> --trajectory        # x_T ... x_0
    python -m milestones sample 07_vae_gan_diffusion --run <a ddpm run> --ddim-steps 50    # DDIM: not the 2020 paper
    python -m milestones sample 07_vae_gan_diffusion --run <a vae run with --z-dim 2> --manifold --n 400  # Figure 4
"""

import math
from pathlib import Path

import torch

from common.checkpoint import FILENAME, load_checkpoint
from common.device import pick_device
from common.errors import UserError, exit_on_user_error
from common.sample_cli import sample_parser

from .model import diffusion_of, image_shape
from .recipe import MILESTONE, draw, judging, save_grid, seeded, to_unit, trained_nets
from .train import Config
from .vae import manifold_grid

COLUMNS = 10  # images per row of an interpolation or a trajectory


def load_run(path: str):
    """(config, networks with their trained weights, checkpoint path) of a 07 run; DDPM's are the averaged ones."""
    p = Path(path)
    if p.is_dir() and not (p / FILENAME).is_file() and list(p.glob("checkpoint-*.pt")):
        arms = ", ".join(sorted(c.name for c in p.glob("checkpoint-*.pt")))
        raise UserError(f"{path} holds one checkpoint per arm ({arms}): pass --run {p}/<one of them>")
    state = load_checkpoint(path)
    owner = state.get("milestone")
    if owner != MILESTONE:
        raise UserError(f"{path} is a run of {owner or 'another program'}, not {MILESTONE}: there is no generator to "
                        f"sample from")
    cfg, nets = trained_nets(state, Config)
    return cfg, nets, p if p.is_file() else p / FILENAME


@torch.no_grad()
def interpolation(cfg, nets, rows: int, device) -> torch.Tensor:
    """Each row walks in a straight line from one prior draw z_0 to another z_1 (as DCGAN's Figure 4 does):
    z = (1 - a) z_0 + a z_1 for COLUMNS values of a from 0 to 1. (rows * COLUMNS, C, H, W) in [0, 1]."""
    a = torch.linspace(0, 1, COLUMNS, device=device).view(1, COLUMNS, 1)
    if cfg.model == "vae":
        vae = nets["vae"]
        z0, z1 = torch.randn(2, rows, 1, vae.z_dim, device=device)
        x = torch.sigmoid(vae.decode((1 - a) * z0 + a * z1).float())  # pixel means E[x|z]
    else:
        with judging(cfg, nets["G"]) as G:
            z0, z1 = G.noise(rows, device).unsqueeze(1), G.noise(rows, device).unsqueeze(1)
            x = to_unit(cfg, G(((1 - a) * z0 + a * z1).flatten(0, 1)))
    return x.reshape(rows * COLUMNS, *image_shape(cfg)).cpu()


@torch.no_grad()
def trajectory(cfg, unet, rows: int, device, ddim_steps: int = 0) -> torch.Tensor:
    """Algorithm 2 (or DDIM) run from x_T to x_0 for `rows` images, COLUMNS + 1 frames of each evenly spaced
    along the chain: (rows * (COLUMNS + 1), C, H, W) in [0, 1], one image per row."""
    diffusion, shape = diffusion_of(cfg), (rows, *image_shape(cfg))
    if ddim_steps:
        _, frames = diffusion.ddim_sample(unet, shape, ddim_steps, return_trajectory=True, device=device,
                                          clip_denoised=cfg.clip_denoised)
    else:  # (T + 1, rows, C, H, W)
        _, frames = diffusion.sample(unet, shape, return_trajectory=True, device=device,
                                     clip_denoised=cfg.clip_denoised)
    pick = torch.linspace(0, len(frames) - 1, COLUMNS + 1).round().long()
    return to_unit(cfg, frames[pick].transpose(0, 1).flatten(0, 1))


def main(argv=None, prog="python -m milestones sample 07_vae_gan_diffusion"):
    def go():
        p = sample_parser(prog, "Draw images from a 07_vae_gan_diffusion run.", n_default=64,
                          n_help="images in the grid (interpolation and trajectory: rows of them, n / 8 and "
                                 "min(n, 8))")
        p.add_argument("--interpolate", action="store_true", help="VAE and GANs: rows of images between two "
                       "latent draws")
        p.add_argument("--trajectory", action="store_true", help="DDPM: frames of the denoising chain x_T ... x_0")
        p.add_argument("--manifold", action="store_true", help="a VAE with a 2-D latent: its learned manifold (the "
                       "paper's Figure 4), a square grid of floor(sqrt(n)) images a side decoded at the Gaussian "
                       "inverse CDF of evenly spaced points of the unit square")
        p.add_argument("--ddim-steps", type=int, default=0, help="DDPM: sample with DDIM (Song et al. 2020) in this "
                       "many steps instead of Algorithm 2's T; not part of Ho et al. 2020")
        args = p.parse_args(argv)
        if args.prompt is not None or args.temperature is not None:
            raise UserError("--prompt and --temperature are for the text models (05_lstm, 06_transformer); "
                            "07 draws images from noise")
        if args.n < 1:
            raise UserError(f"--n must be at least 1, got {args.n}")
        if args.interpolate + args.trajectory + args.manifold > 1:
            raise UserError("--interpolate, --trajectory and --manifold make different pictures: ask for one")
        cfg, nets, ckpt = load_run(args.run)
        if args.interpolate and cfg.model == "ddpm":
            raise UserError("--interpolate walks the latent space of the VAE and the GANs; a ddpm run's picture of "
                            "its process is --trajectory")
        if args.trajectory and cfg.model != "ddpm":
            raise UserError(f"--trajectory shows DDPM's denoising chain; a {cfg.model} run draws each image in one "
                            f"pass (try --interpolate)")
        if args.manifold and cfg.model != "vae":
            raise UserError(f"--manifold decodes a grid of the VAE's 2-D latent space; this is a {cfg.model} run")
        if args.ddim_steps and cfg.model != "ddpm":
            raise UserError(f"--ddim-steps is a DDPM sampler; this is a {cfg.model} run")
        if args.ddim_steps < 0:
            raise UserError(f"--ddim-steps must be positive, got {args.ddim_steps}")
        device = pick_device(args.device)
        nets = nets.to(device)
        kind = ("interpolation" if args.interpolate else "trajectory" if args.trajectory else
                "manifold" if args.manifold else "sample")
        with seeded(args.seed, device):
            if args.interpolate:
                images, nrow = interpolation(cfg, nets, max(1, args.n // 8), device), COLUMNS
            elif args.manifold:  # no randomness: the grid is fixed by n
                side = math.isqrt(args.n)
                images, nrow = manifold_grid(nets["vae"], side).cpu(), side
            elif args.trajectory:
                images, nrow = trajectory(cfg, nets["unet"], min(args.n, 8), device, args.ddim_steps), COLUMNS + 1
            elif args.ddim_steps:
                x = diffusion_of(cfg).ddim_sample(nets["unet"], (args.n, *image_shape(cfg)), args.ddim_steps,
                                                  device=device, clip_denoised=cfg.clip_denoised)
                images, nrow = to_unit(cfg, x).cpu(), 8
            else:
                unet = nets["unet"] if cfg.model == "ddpm" else None
                images = draw(cfg, nets, args.n, device, diffusion_of(cfg), unet)
                nrow = 8
        suffix = f"-ddim{args.ddim_steps}" if args.ddim_steps else ""
        out = Path(args.out) if args.out else ckpt.parent / "samples" / f"{kind}{suffix}-seed{args.seed}.png"
        save_grid(images, out, nrow=nrow)
        print(f"{cfg.model} ({ckpt.name}): {len(images)} images -> {out}")
        return out
    return exit_on_user_error(go)


if __name__ == "__main__":
    main()
