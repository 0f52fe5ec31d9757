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
