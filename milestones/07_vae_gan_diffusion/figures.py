"""Sample grids that read alone: one panel per run or arm, drawn from its checkpoint, each panel labelled with
the arm and its scores, the figure titled with the experiment, preset, budget and seed.

    python -m milestones.07_vae_gan_diffusion.figures                         # redraws the committed figures
    python -m milestones.07_vae_gan_diffusion.figures samples <run dir> <png>  # from any 07 run (or comparison)

A comparison run (gan_loss, dcgan_beta1) keeps one checkpoint per arm; every panel draws its 64 images from the
same noise (seed 0), from the arm's final weights (DDPM: its averaged ones).
"""

import json
from pathlib import Path

import torch

from common.errors import UserError
from common.plot import pyplot, redraw_main, save

WHAT = {"gan_loss": "MLP GAN on MNIST: minimax vs non-saturating generator loss (Goodfellow et al. 2014)",
        "dcgan_beta1": "DCGAN on MNIST: Adam beta1 0.9 vs 0.5 (Radford et al. 2015)"}
MODELS = {"vae": "VAE (Kingma & Welling 2013)", "gan": "MLP GAN (Goodfellow et al. 2014)",
          "dcgan": "DCGAN (Radford et al. 2015)", "ddpm": "DDPM (Ho et al. 2020)"}
ARMS = {"minimax": "minimax G loss (eq. 1)", "nonsaturating": "non-saturating G loss (sec. 3)",
        "beta1_0.9": "Adam beta1 = 0.9", "beta1_0.5": "Adam beta1 = 0.5 (the paper's)"}


def grids_figure(panels: dict, title: str, nrow: int = 8):
    """panels: {label: (n, C, H, W) images in [0, 1]} -> one grid per panel side by side, each titled."""
    from torchvision.utils import make_grid

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


def samples(checkpoint: Path, n: int, seed: int) -> torch.Tensor:
    """n images from a run's checkpoint, from the noise of `seed`, on the CPU: (n, C, H, W) in [0, 1]."""
    from .model import diffusion_of
    from .recipe import draw, seeded
    from .sample import load_run

    cfg, nets, _ = load_run(str(checkpoint))
    with seeded(seed, "cpu"):
        return draw(cfg, nets, n, "cpu", diffusion_of(cfg), nets["unet"] if cfg.model == "ddpm" else None)


def redraw_samples(run, png, n: int = 64, seed: int = 0) -> Path:
    """One panel per arm of a comparison run (or one for a single run), labelled with its scores."""
    run = Path(run)
    card = json.loads((run / "summary.json").read_text())
    cfg = json.loads((run / "config.json").read_text())["config"]
    arms = card.get("arms") or {None: card}
    panels = {}
    for arm, arm_card in arms.items():
        ckpt = run / (f"checkpoint-{arm}.pt" if arm else "checkpoint.pt")
        if not ckpt.is_file():
            raise UserError(f"{ckpt} is missing: the samples are drawn from the run's checkpoints")
        panels[f"{ARMS.get(arm, arm)}\n{scores(arm_card)}" if arm else scores(arm_card)] = samples(ckpt, n, seed)
    data = {"mnist": "MNIST"}.get(card["dataset"], card["dataset"])
    what = WHAT.get(cfg["experiment"], f"{MODELS.get(cfg['model'], cfg['model'])}, {card['model']}, on {data}: "
                    + ("pixel means E[x|z], z ~ N(0, I)" if cfg["model"] == "vae" else "samples"))
    steps = next(iter(arms.values()))["steps"]
    epochs = next(iter(arms.values())).get("epochs")
    budget = f"{steps:,} steps" + (f" ({epochs:g} epochs)" if epochs else "")
    title = (f"{what}\npreset {card['preset']}, {budget}{' each' if len(arms) > 1 else ''}, seed {card['seed']}, "
             f"trained in {card['precision']}; {n} samples from the final weights, noise seed {seed}")
    return save(grids_figure(panels, title), png)


DRAW = {"samples": redraw_samples}
COMMITTED = {
    "gan_loss.png": ("samples", "runs/qC/07_vae_gan_diffusion/20261207-031526-gan-minimax-vs-nonsaturating"),
    "vae_samples.png": ("samples", "runs/qC/07_vae_gan_diffusion/20261207-030654-vae-200-200-50-tanh"),
}

if __name__ == "__main__":
    redraw_main(__file__, DRAW, COMMITTED)
