"""Sample grids that read alone: one panel per run or arm, drawn from its checkpoint, each panel labelled with
the arm and its scores, the figure titled with the experiment, preset, budget and seed.

    python -m milestones.07_vae_gan_diffusion.figures                         # redraws the committed figures
    python -m milestones.07_vae_gan_diffusion.figures samples <run dir> <png>  # from any 07 run (or comparison)

A comparison run (gan_loss, dcgan_beta1) keeps one checkpoint per arm; every panel draws its 64 images from the
same noise (seed 0), from the arm's final weights (DDPM: its averaged ones). The drawing is recipe.py's, which a
comparison run calls at its end; this module reads runs back.
"""

from pathlib import Path

from common.plot import redraw_main

from .recipe import grids_figure, side_by_side  # noqa: F401 (the drawing)
from .train import Config


def redraw_samples(run, png, n: int = 64, seed: int = 0) -> Path:
    """One panel per arm of a comparison run (or one for a single run), labelled with its scores."""
    return side_by_side(run, png, Config, n, seed)


DRAW = {"samples": redraw_samples}
COMMITTED = {
    "gan_loss.png": ("samples", "runs/qC/07_vae_gan_diffusion/20261207-031526-gan-minimax-vs-nonsaturating"),
    "vae_samples.png": ("samples", "runs/qC/07_vae_gan_diffusion/20261207-030654-vae-200-200-50-tanh"),
    "dcgan_beta1.png": ("samples", "runs/qH/07_vae_gan_diffusion/20261207-044911-dcgan-beta1-0.9-vs-0.5"),
}

if __name__ == "__main__":
    redraw_main(__file__, DRAW, COMMITTED)
