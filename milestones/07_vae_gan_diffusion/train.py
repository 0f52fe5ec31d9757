"""Train the generators: the VAE (2013), the GAN (2014) and DCGAN (2015), and DDPM (2020).

    python -m milestones train 07_vae_gan_diffusion --model vae --preset quick     # NLL by importance sampling
    python -m milestones train 07_vae_gan_diffusion --model gan --preset quick     # the MLP GAN of the paper's code
    python -m milestones train 07_vae_gan_diffusion --model dcgan --preset quick
    python -m milestones train 07_vae_gan_diffusion --model ddpm --preset quick
    python -m milestones train 07_vae_gan_diffusion --model ddpm --preset paper    # CIFAR-10, 800k steps (GPU)
    python -m milestones train 07_vae_gan_diffusion --model dcgan --preset paper --image-dir <LSUN bedrooms, ...>
    python -m milestones train 07_vae_gan_diffusion --experiment gan_loss --preset quick
    python -m milestones sample 07_vae_gan_diffusion --run runs/07_vae_gan_diffusion/<run>

Every run writes sample grids (samples/step_<N>.png, from fixed noise) and ends by scoring its samples on one
yardstick (evaluate.py: classifier FID and KID, the confidently classified share, the class entropy).

The recipes' loops are train_vae.py, train_gan.py (GAN and DCGAN) and train_ddpm.py, on the pieces they share in
recipe.py; this file holds the flags, the presets, the experiments and main().
"""

import argparse
import sys
from dataclasses import dataclass, replace

from common.config import TrainConfig, arg, train_command
from common.device import seed_everything
from common.errors import UserError
from common.session import open_run

from .model import MODELS
from .recipe import GANS, MILESTONE, image_files, load_classifier, side_by_side
from .train_ddpm import train_ddpm
from .train_gan import train_gan
from .train_vae import train_vae


@dataclass
class Config(TrainConfig):
    experiment: str = arg("train", "what to run (the list below)")
    model: str = arg("vae", "the generator to train", choices=MODELS, only="train")
    dataset: str = arg("mnist", "training images", choices=("mnist", "fashion_mnist", "cifar10"),
                       only=("train", "gan_loss", "dcgan_beta1"))
    train_size: int = arg(0, "train on the first N training images only (0 = all; the GAN release used 50,000)")
    fid_samples: int = arg(10000, "samples scored against as many real test images at the end (0 = no scoring)")
    inception_fid: bool = arg(False, "also the published FID, Inception-v3 features through torchmetrics (needs "
                              "torchmetrics[image] and its weights: without them, a one-line error before training)")
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
    image_size: int = arg(0, "DCGAN / DDPM: train at this side length, resizing the images (0 = the dataset's; 64 "
                          "for --image-dir)")
    image_dir: str = arg("", "DCGAN: train on the images in this folder and its subfolders instead of --dataset "
                         "(.png, .jpg, .jpeg, .bmp, .webp; each centre-cropped to a square, resized to --image-size, "
                         "RGB, all held in memory: --train-size caps how many). The paper's data: LSUN bedrooms, a "
                         "faces set, ImageNet-1k")
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
                 image_dir=("dcgan",), image_size=("dcgan", "ddpm"), **{k: ("ddpm",) for k in (
                     "ch", "ch_mult", "num_res_blocks", "attn", "dropout", "timesteps", "warmup_steps",
                     "ema_decay", "clip", "clip_denoised")})
OPTIMIZERS = {"vae": ("adam", "adagrad"), "gan": ("sgd", "adam"), "dcgan": ("adam", "sgd"), "ddpm": ("adam",)}

# Each model's recipe per preset. `train/<preset>` takes the recipe of --model (presets_for below); the
# comparisons take the GAN's and DCGAN's, vae_examples its own.
VAE_NET = dict(hidden="200,200", z_dim=50, activation="tanh")  # Burda et al.'s one-stochastic-layer model
RECIPES = {
    "vae": {
        # Burda et al. 2015's training: Adam (eps 1e-4), batch 20, 3^i epochs at 1e-3 * 10^(-i/7), i = 0..7
        "paper": dict(VAE_NET, optimizer="adam", lr=1e-3, adam_eps=1e-4, batch_size=20, schedule="iwae",
                      epochs=3280, eval_every=30000, iw_samples=5000),
        "default": dict(VAE_NET, optimizer="adam", lr=1e-3, batch_size=100, schedule="cosine", epochs=200,
                        eval_every=6000, iw_samples=5000),
        # <= 5 minutes on a 2-core AVX2 laptop, the yardstick's classifier trained first included: 25 epochs,
        # and the bound tightened with k = 500 importance samples (k = 1,000 took a minute there by itself)
        "quick": dict(VAE_NET, optimizer="adam", lr=2e-3, batch_size=100, schedule="cosine", epochs=25,
                      eval_every=5000, iw_samples=500, fid_samples=1000),
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
        # bf16 where native (auto), as the other quick presets; the yardstick's scores depend on the precision
        # (a card names it)
        "quick": dict(hidden="1200,1200", z_dim=100, optimizer="sgd", lr=0.1, batch_size=100, epochs=5,
                      eval_every=1000, fid_samples=1000, precision="auto"),
        "smoke": dict(hidden="32", z_dim=8, optimizer="sgd", lr=0.1, batch_size=16, steps=8, eval_every=4,
                      fid_samples=0, ckpt_every=3),
    },
    "dcgan": {
        # Radford et al. 2015: the 64x64 nets of Figure 1 (z 100, 1024 channels at 4x4 down to 128 at 32x32) and sec.
        # 4's recipe (Adam lr 2e-4, beta_1 0.5, batch 128) on the images of --image-dir (the paper's LSUN bedrooms,
        # faces, ImageNet-1k; without it, check() says so); the released code trains 25 epochs. No yardstick: its
        # classifiers know only MNIST, Fashion-MNIST and CIFAR-10
        "paper": dict(image_size=64, z_dim=100, optimizer="adam", lr=2e-4, beta1=0.5, batch_size=128, width=128,
                      epochs=25, eval_every=2000, fid_samples=0),
        # ours, not the paper's: the paper's recipe on CIFAR-10 at 32x32 (the 64x64 layout minus its first stage), 25
        # epochs, for one GPU
        "default": dict(dataset="cifar10", z_dim=100, optimizer="adam", lr=2e-4, beta1=0.5, batch_size=128,
                        width=128, epochs=25, eval_every=2000, precision="auto"),
        # bf16 where native (auto), as the other quick presets
        "quick": dict(z_dim=100, optimizer="adam", lr=2e-4, beta1=0.5, batch_size=128, width=32, epochs=8,
                      eval_every=936, fid_samples=1000, precision="auto"),
        "smoke": dict(z_dim=8, optimizer="adam", lr=2e-4, beta1=0.5, batch_size=16, width=4, steps=6,
                      eval_every=3, fid_samples=0, ckpt_every=3),
    },
    "ddpm": {
        # Ho et al. 2020, CIFAR-10: the 35.7M U-Net, T = 1000, Adam 2e-4, batch 128, 5000 warm-up steps, EMA 0.9999,
        # gradient clip 1, random flips, 800k steps
        "paper": dict(dataset="cifar10", ch=128, ch_mult="1,2,2,2", num_res_blocks=2, attn="16", dropout=0.1,
                      timesteps=1000, optimizer="adam", lr=2e-4, batch_size=128, warmup_steps=5000,
                      ema_decay=0.9999, steps=800_000, eval_every=20000, ckpt_every=5000),
        # one GPU: the paper's CIFAR-10 U-Net layout at half its width (ch 64, about a quarter of its parameters) and
        # 40k of its 800k steps, EMA 0.9995 to suit the shorter run; random flips as the paper
        "default": dict(dataset="cifar10", ch=64, ch_mult="1,2,2,2", num_res_blocks=2, attn="16", dropout=0.1,
                        timesteps=1000, optimizer="adam", lr=2e-4, batch_size=128, warmup_steps=1000,
                        ema_decay=0.9995, steps=40000, eval_every=5000, test_size=2000, precision="auto"),
        # a CPU budget: a 24-channel U-Net (GroupNorm: gcd(32, 24) = 8 groups at 24 channels, 16 at 48, three
        # channels to a group everywhere), a 100-step
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


def presets_for(argv) -> dict:
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
    if cfg.model == "dcgan" and cfg.preset == "paper" and not cfg.image_dir:
        raise UserError("the DCGAN paper preset trains the 64x64 nets on the paper's data, LSUN bedrooms, a faces set "
                        "or ImageNet-1k (or any folder of images): give --image-dir DIR")
    if cfg.image_dir:
        if "--dataset" in given:
            raise UserError("--dataset and --image-dir each name the training images: give one")
        if cfg.fid_samples and "--fid-samples" in given:  # a preset's count is dropped: load_classifier
            raise UserError("the yardstick's classifiers know MNIST, Fashion-MNIST and CIFAR-10, not an image folder: "
                            "--fid-samples has nothing to score with under --image-dir")
        image_files(cfg.image_dir)  # a missing or empty folder fails before a run directory is made
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
    parts = [value + paper, shown, f"{card.get('train_seconds', 0):.0f} s"]
    print(f"{name}: " + "; ".join(p for p in parts if p))  # an unscored run has no scores to show


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
        plot = side_by_side(run.dir, run.dir / f"{cfg.experiment}.png", Config)
        print(f"sample grids: {run.dir / 'samples'}/<arm>; the arms side by side: {plot}; run record: {run.dir}")
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
    return train_command(Config, presets_for(argv), EXPERIMENTS, argv, prog, __doc__, MILESTONE,
                         only_for={"model": FOR_MODEL})


if __name__ == "__main__":
    main()
