"""The course: deep learning's milestones in the order the history tells them.

Each built milestone is a folder `milestones/<id>/` whose `__init__.py` defines `META` and which has
`model.py`, `train.py` and `NOTES.md`. Milestones not built yet are listed here as planned.
"""

import importlib
from pathlib import Path

COURSE = ["01_dnn", "02_cnn_lenet", "03_alexnet", "04_resnet", "05_lstm", "06_transformer",
          "07_vae_gan_diffusion"]

# What the course promises for milestones whose folder does not exist yet.
PLANNED = {
    "06_transformer": dict(year=2017, title="The Transformer", short="Vaswani et al. 2017", paper="Vaswani et al. 2017; Radford et al. 2018",
                           dataset="Multi30k de-en, Tiny Shakespeare", metric="BLEU / val_loss"),
    "07_vae_gan_diffusion": dict(year=2013, title="VAE, GAN/DCGAN, DDPM", short="Kingma 2013 to Ho 2020",
                                 paper="Kingma & Welling 2013; Goodfellow et al. 2014; Radford et al. 2015; "
                                       "Ho et al. 2020", dataset="MNIST, CIFAR-10", metric="NLL bound / FID"),
}

# A chapter by the name of its model: `train lenet` is `train 02_cnn_lenet`; a name that picks a model or an
# experiment of its chapter adds that flag to `train` (`train vae` is `train 07_vae_gan_diffusion --model vae`).
ALIASES = {"lenet": ("02_cnn_lenet",), "alexnet": ("03_alexnet",), "resnet": ("04_resnet",), "lstm": ("05_lstm",),
           "transformer": ("06_transformer",), "gpt": ("06_transformer", "--experiment", "charlm"),
           **{m: ("07_vae_gan_diffusion", "--model", m) for m in ("vae", "gan", "dcgan", "ddpm")}}


def chapter_of(name: str) -> str:
    """The chapter id (02_cnn_lenet) an id, its number (02), its name (cnn_lenet) or a model's name (lenet, ALIASES)
    means, for every command that takes one; anything else is a UserError naming the valid ones."""
    from common.errors import UserError

    if name in ALIASES:
        return ALIASES[name][0]
    for mid in COURSE:
        if name in (mid, *mid.split("_", 1)):
            return mid
    raise UserError(f"unknown milestone {name!r}; the course has: {', '.join(COURSE)} (or {', '.join(ALIASES)})")


ROOT = Path(__file__).resolve().parent


def is_built(mid: str) -> bool:
    return (ROOT / mid / "train.py").is_file()


def meta(mid: str) -> dict:
    """Metadata of a milestone: its own META when built, the planned entry otherwise."""
    if is_built(mid):
        info = dict(importlib.import_module(f"milestones.{mid}").META)
        info["status"] = "built"
    else:
        info = dict(PLANNED[mid])
        info["status"] = "planned"
    info["id"] = mid
    return info


def resolve_config(mid: str, argv: list):
    """The config `train <mid> <argv>` would run today (its preset and experiment applied), without running it."""
    from common.config import parse_config

    train = importlib.import_module(f"milestones.{mid}.train")
    return parse_config(train.Config, list(argv), presets_of(train, argv), experiments=train.EXPERIMENTS)


def presets_of(train, argv: list) -> dict:
    """A train module's presets for this command line: `presets_for(argv)` where a preset depends on another
    flag (05's --size, 07's --model), else its PRESETS."""
    return train.presets_for(argv) if hasattr(train, "presets_for") else train.PRESETS
