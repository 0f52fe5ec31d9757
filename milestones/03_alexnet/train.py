"""Train AlexNet: the CIFAR-10 variant here, the 2012 ImageNet network where there is a GPU and the images.

    python -m milestones train 03_alexnet --preset quick                 # CIFAR-10 variant, ~12 CPU minutes
    python -m milestones train 03_alexnet --experiment imagenet --preset paper   # <data root>/imagenet/{train,val}
    python -m milestones train 03_alexnet --experiment relu_vs_tanh --preset quick   # the paper's Figure 1
    python -m milestones train 03_alexnet --experiment ablations --preset quick      # LRN, dropout, overlapping pools
    python -m milestones train 03_alexnet --experiment groups --preset quick         # two-GPU split vs one GPU
"""

import itertools
import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from common import data
from common.checkpoint import restore, save_checkpoint
from common.config import TrainConfig, arg, to_dict, train_command
from common.data.cifar import MEAN as CIFAR_MEAN, STD as CIFAR_STD
from common.device import count_params, setup
from common.errors import UserError
from common.logging import Throughput, progress
from common.loop import check_finite, open_run, optimizer_step, save_on_interrupt

from .data import IMAGENET_MEAN, IMAGENET_STD, Augment, fit_pca, imagenet_loaders
from .figures import save_kernel_grid
from .model import CIFAR, IMAGENET, AlexNet

MILESTONE = "03_alexnet"
EXPERIMENTS = ("cifar", "imagenet", "relu_vs_tanh", "ablations", "groups")


@dataclass
class Config(TrainConfig):
    experiment: str = arg("cifar", "cifar: the CIFAR-10 variant; imagenet: the 2012 network on an ImageFolder "
                          "root; relu_vs_tanh: Figure 1; ablations: without LRN / dropout / overlapping pooling; "
                          "groups: two-GPU grouped convolutions vs one GPU", choices=EXPERIMENTS)
    width: float = arg(1.0, "cifar: scale of the maps (1.0 = 64-128-192-192-128 maps, 1024-unit fc layers)")
    channels: str = arg("", "cifar: conv1..conv5 maps, comma-separated, overriding --width's (e.g. 32,64,96,96,64)")
    activation: str = arg("relu", "hidden units: relu (the paper) or tanh", choices=("relu", "tanh"))
    groups: int = arg(2, "2 = the paper's two-GPU split of conv2/conv4/conv5 (and of LRN); 1 = one GPU",
                      choices=(1, 2))
    lrn: bool = arg(True, "local response normalisation after conv1 and conv2 (k=2, n=5, alpha=1e-4, beta=0.75)")
    overlap: bool = arg(True, "overlapping max-pooling (z=3, s=2); false: z=2, s=2")
    dropout: float = arg(0.5, "dropout probability on fc6 and fc7 outputs (0 = none)")
    init: str = arg("paper", "paper: N(0, 0.01) weights, biases 1 in conv2/4/5 and fc6/7; modern: He et al. 2015",
                    choices=("paper", "modern"))
    momentum: float = arg(0.9, "SGD momentum")
    weight_decay: float = arg(5e-4, "L2 weight decay (the paper's 0.0005)")
    schedule: str = arg("plateau", "plateau: LR / 10 when validation error stops improving (the paper); "
                        "cosine: decay to 0 over the run", choices=("plateau", "cosine"))
    patience: int = arg(3, "plateau: epochs without a new best validation error before dividing the LR by 10")
    max_drops: int = arg(3, "plateau: the paper divided the LR three times before stopping")
    val_size: int = arg(5000, "cifar + plateau: training images held out as the validation set")
    jitter: float = arg(0.1, "std of the PCA colour jitter's alpha_i (the paper's 0.1); 0 = off")
    crop_padding: int = arg(4, "cifar: zero padding before the random 32x32 crop")
    ten_crop: bool = arg(False, "test on ten patches (corners, centre, mirrors) and average their softmax")
    train_subset: int = arg(0, "cifar: train on the first N training images only (0 = all)")
    test_subset: int = arg(0, "cifar: evaluate on the first N test images only (0 = all 10,000)")
    target_error: float = arg(0.25, "relu_vs_tanh: the training error each net is trained to reach")
    tanh_lr: float = arg(0.0, "relu_vs_tanh: learning rate of the tanh net (0 = same as --lr)")
    workers: int = arg(8, "imagenet: DataLoader worker processes decoding JPEGs")
    channels_last: bool = arg(False, "NHWC memory layout (faster convolutions on recent GPUs)")
    log_every: int = arg(50, "log training loss every N steps")


_CIFAR = dict(experiment="cifar", batch_size=128, momentum=0.9, weight_decay=5e-4)
_IMAGENET = dict(batch_size=128, lr=0.01, init="paper", schedule="plateau", epochs=90, jitter=0.1, ten_crop=True)
_FIG1 = dict(batch_size=128, lr=0.01, weight_decay=0.0, jitter=0.0, crop_padding=0)
PRESETS = {
    # the paper's recipe on the CIFAR-10 variant: its init, LR 0.01 divided by 10 on plateaus, ~90 epochs
    "cifar/paper": dict(_CIFAR, width=1.0, lr=0.01, init="paper", schedule="plateau", epochs=90),
    "cifar/default": dict(_CIFAR, width=1.0, lr=0.01, init="modern", schedule="cosine", epochs=30),
    "cifar/quick": dict(_CIFAR, width=0.5, lr=0.01, init="modern", schedule="cosine", epochs=3),
    "cifar/smoke": dict(_CIFAR, width=0.25, lr=0.01, init="modern", schedule="cosine", epochs=1, steps=4,
                        batch_size=32, train_subset=256, test_subset=500, val_size=500, log_every=2),
    "imagenet/paper": _IMAGENET,
    "imagenet/default": _IMAGENET,
    "imagenet/quick": dict(_IMAGENET, epochs=1, init="modern"),
    "imagenet/smoke": dict(_IMAGENET, epochs=1, steps=2, batch_size=4, workers=0, log_every=1),
    # Figure 1: a four-layer CNN, no regularisation, each net at its own largest good LR
    "relu_vs_tanh/paper": dict(_FIG1, epochs=60),
    "relu_vs_tanh/default": dict(_FIG1, epochs=60),
    "relu_vs_tanh/quick": dict(_FIG1, epochs=40, train_subset=5000),
    "relu_vs_tanh/smoke": dict(_FIG1, epochs=2, train_subset=256, target_error=0.9, batch_size=32),
    "ablations/paper": dict(_CIFAR, width=1.0, lr=0.01, init="modern", schedule="cosine", epochs=30),
    "ablations/default": dict(_CIFAR, width=1.0, lr=0.01, init="modern", schedule="cosine", epochs=30),
    "ablations/quick": dict(_CIFAR, width=0.5, lr=0.01, init="modern", schedule="cosine", epochs=2),
    "ablations/smoke": dict(_CIFAR, width=0.25, lr=0.01, init="modern", schedule="cosine", epochs=1, steps=2,
                            batch_size=32, train_subset=128, test_subset=200, log_every=1),
}
PRESETS["groups/paper"], PRESETS["groups/default"] = PRESETS["ablations/paper"], PRESETS["ablations/default"]
PRESETS["groups/quick"], PRESETS["groups/smoke"] = PRESETS["ablations/quick"], PRESETS["ablations/smoke"]


def build_model(cfg: Config, num_classes: int) -> AlexNet:
    design = dict(groups=cfg.groups, activation=cfg.activation, lrn=cfg.lrn, pool_kernel=3 if cfg.overlap else 2,
                  dropout=cfg.dropout, num_classes=num_classes)
    if cfg.experiment == "imagenet":
        model = AlexNet(replace(IMAGENET, **design))
    else:
        if not cfg.width > 0:
            raise UserError(f"--width must be positive, got {cfg.width}")
        chans = tuple(max(2, 2 * round(c * cfg.width / 2)) for c in CIFAR.channels)  # even: two halves
        if cfg.channels:
            try:
                chans = tuple(int(c) for c in cfg.channels.split(","))
            except ValueError:
                chans = ()
            if len(chans) != 5 or min(chans) < 1 or any(c % cfg.groups for c in chans):
                raise UserError(f"--channels takes five positive map counts divisible by --groups, got {cfg.channels!r}")
        model = AlexNet(replace(CIFAR, channels=chans, hidden=max(1, round(CIFAR.hidden * cfg.width)), **design))
    if cfg.init == "modern":
        model.modern_init()
    return model


def model_name(cfg: Config) -> str:
    name = "alexnet" if cfg.experiment == "imagenet" else f"alexnet-cifar-w{cfg.width:g}"
    if cfg.channels and cfg.experiment != "imagenet":
        name = "alexnet-cifar-c" + cfg.channels.replace(",", "-")
    off = [f for f, on in (("lrn", cfg.lrn), ("overlap", cfg.overlap), ("dropout", cfg.dropout > 0)) if not on]
    return name + ("" if cfg.groups == 2 else "-1gpu") + "".join(f"-no{f}" for f in off) + \
        ("" if cfg.activation == "relu" else f"-{cfg.activation}")


def cifar_data(cfg: Config, rt):
    """(train loader, validation loader or None, test loader, augment, num_classes)."""
    (x, y), (x_test, y_test) = data.load("cifar10", cfg.data_dir).values()
    val = None
    if cfg.schedule == "plateau":  # the paper watched a validation set, never the test set
        if not 0 < cfg.val_size < len(x):
            raise UserError(f"--val-size must be between 1 and {len(x) - 1} with --schedule plateau")
        x, y, val = x[:-cfg.val_size], y[:-cfg.val_size], (x[-cfg.val_size:], y[-cfg.val_size:])
    if cfg.train_subset:
        if cfg.train_subset < cfg.batch_size:
            raise UserError(f"--train-subset {cfg.train_subset} is smaller than one batch ({cfg.batch_size})")
        x, y = x[:cfg.train_subset], y[:cfg.train_subset]
    if cfg.test_subset:
        x_test, y_test = x_test[:cfg.test_subset], y_test[:cfg.test_subset]
    kw = dict(device=rt.device, rank=rt.rank, world_size=rt.world_size)
    train = data.TensorLoader(x, y, batch_size=cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed, **kw)
    val = val and data.TensorLoader(*val, batch_size=500, **kw)
    test = data.TensorLoader(x_test, y_test, batch_size=500, **kw)
    eigval, eigvec = fit_pca(x)
    aug = Augment(rt.device, 32, cfg.crop_padding, CIFAR_MEAN, CIFAR_STD, eigval, eigvec, cfg.jitter,
                  cfg.channels_last)
    return train, val, test, aug, 10


def imagenet_data(cfg: Config, rt):
    root = data.data_root(cfg.data_dir)
    train, val, classes = imagenet_loaders(root, cfg.batch_size, cfg.workers, rt.rank, rt.world_size, cfg.seed)
    sample = torch.cat([x for x, _ in itertools.islice(train, 8)])  # a few batches are enough for 3x3 statistics
    eigval, eigvec = fit_pca(sample)
    aug = Augment(rt.device, 227, 0, IMAGENET_MEAN, IMAGENET_STD, eigval, eigvec, cfg.jitter, cfg.channels_last)
    return train, None, val, aug, classes


@torch.no_grad()
def evaluate(model, loader, aug: Augment, rt, ten_crop: bool = False) -> tuple[float, float]:
    """(cross-entropy, error) of the (ten-patch averaged) softmax over a loader, summed across ranks."""
    model.eval()
    totals = torch.zeros(3, device=rt.device)  # loss sum, wrong, count
    for x, y in loader:
        y = y.to(rt.device, non_blocking=True)
        with rt.autocast():
            if ten_crop:
                crops = aug.test(x, ten_crop=True)  # (10, B, 3, s, s)
                p = model(crops.flatten(0, 1)).float().softmax(-1).unflatten(0, (10, -1)).mean(0)  # (B, K)
            else:
                p = model(aug.test(x)).float().softmax(-1)
        totals[0] += F.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum")
        totals[1] += (p.argmax(-1) != y).sum()
        totals[2] += y.numel()
    rt.all_reduce_sum(totals)
    model.train()
    loss, wrong, n = totals.tolist()
    return loss / max(n, 1), wrong / max(n, 1)


def train_classifier(cfg: Config, rt, argv=None) -> dict:
    """One AlexNet training run, the paper's loop: SGD with momentum and weight decay, LR / 10 on plateaus."""
    source = imagenet_data if cfg.experiment == "imagenet" else cifar_data
    train, val, test, aug, num_classes = source(cfg, rt)
    model = build_model(cfg, num_classes).to(rt.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    name = model_name(cfg)
    steps_per_epoch = len(train)
    total = cfg.steps or cfg.epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=cfg.patience - 1,
                                                           min_lr=cfg.lr * 0.1 ** cfg.max_drops)
    scaler = rt.grad_scaler()
    logger, state = open_run(cfg, MILESTONE, name, rt, argv)
    step, train_seconds, test_err = 0, 0.0, None
    if state is not None:
        restore(state, model, opt, sched, scaler)
        step, train_seconds, test_err = state["step"], state.get("train_seconds", 0.0), state.get("test_error")
    net = rt.wrap(model, compile=cfg.compile)

    def save(**extra):
        if rt.is_main:
            save_checkpoint(logger.checkpoint_path, model, opt, sched, scaler, step=step, config=to_dict(cfg),
                            train_seconds=seconds_so_far(), **extra)
        return logger.checkpoint_path

    def seconds_so_far() -> float:  # including the runs this one resumes
        return train_seconds + time.time() - t_start

    meter, t_start = Throughput(warmup=2), time.time()
    bar = progress(total=total, initial=step, desc=f"{MILESTONE} {name}", rt=rt, unit="step")
    wrong = torch.zeros(2, device=rt.device)  # running training mistakes, examples this epoch
    with save_on_interrupt(save, rt):
        while step < total:
            epoch, start = divmod(step, steps_per_epoch)
            if hasattr(train, "batches"):
                batches = train.batches(epoch, start)
            else:  # a DataLoader: reshuffle per epoch, skip what a resumed run already saw
                if hasattr(train.sampler, "set_epoch"):
                    train.sampler.set_epoch(epoch)
                train.generator.manual_seed(cfg.seed * 100_003 + epoch)
                batches = itertools.islice(train, start, None)
            for x, y in batches:
                meter.start()
                x, y = aug.train(x), y.to(rt.device, non_blocking=True)
                with rt.autocast():
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
                optimizer_step(loss, opt, scaler)
                if cfg.schedule == "cosine":
                    sched.step()
                step += 1
                meter.stop(cfg.batch_size)  # the global batch: ranks step in lockstep
                wrong += torch.stack([(logits.argmax(-1) != y).sum(), torch.tensor(y.numel(), device=rt.device)])
                if step % cfg.log_every == 0 or step == total:
                    value = check_finite(loss, step)
                    bar.set_postfix(loss=f"{value:.3f}", ex_s=f"{meter.rate:,.0f}")
                    logger.log(step, "train", epoch=step / steps_per_epoch, loss=value,
                               lr=opt.param_groups[0]["lr"], examples_per_second=meter.rate)
                bar.update(1)
                if step % steps_per_epoch == 0 or step == total:
                    ep = step / steps_per_epoch
                    train_err = (wrong[0] / wrong[1].clamp_min(1)).item()
                    wrong.zero_()
                    row = dict(train_error=train_err)
                    test_loss, test_err = evaluate(net, test, aug, rt, cfg.ten_crop)
                    if val is not None:
                        row["val_loss"], row["val_error"] = evaluate(net, val, aug, rt, cfg.ten_crop)
                    if cfg.schedule == "plateau":  # ImageNet: its validation set is the held-out set we test on
                        sched.step(row.get("val_error", test_err))
                    logger.log(step, "test", epoch=ep, loss=test_loss, error=test_err, **row)
                    if rt.is_main:
                        extra = f", val error {row['val_error']:.2%}" if "val_error" in row else ""
                        bar.write(f"epoch {ep:.2f}: train error {train_err:.2%}{extra}, test error {test_err:.2%}, "
                                  f"lr {opt.param_groups[0]['lr']:.2g}")
                    save(test_error=test_err)
                if step == total:
                    break
    bar.close()
    save(test_error=test_err)
    train_seconds = seconds_so_far()
    if rt.is_main:
        save_kernel_grid(model, logger.dir / "kernels.png")
    paper = None
    if cfg.experiment == "imagenet" and name == "alexnet":
        paper = 0.407 if cfg.ten_crop else None
    card = logger.summary(
        milestone=MILESTONE, model=name,
        dataset="ImageNet (ILSVRC-2012 val)" if cfg.experiment == "imagenet" else "CIFAR-10 (JPEG-q75 mirror)",
        metric="top1_error" + ("_10crop" if cfg.ten_crop else ""), value=test_err, paper_value=paper,
        paper_source="Krizhevsky et al. 2012, Table 2: 1 CNN, 40.7% top-1 on ILSVRC-2012 val" if paper else None,
        params=count_params(model), train_seconds=round(train_seconds, 2),
        examples_per_second=round(meter.rate, 1), device=rt.device_name, precision=rt.precision,
        world_size=rt.world_size, steps=step, epochs=round(step / steps_per_epoch, 3), seed=cfg.seed,
        preset=cfg.preset, run_dir=str(logger.dir),
    )
    if rt.is_main:
        print(f"{name}: test error {test_err:.2%} on {card['dataset']}; {train_seconds:.0f} s, "
              f"{meter.rate:,.0f} examples/s; run record: {logger.dir}")
    return card


def run(cfg: Config, argv=None) -> dict:
    for name in ("patience", "log_every", "workers"):
        if getattr(cfg, name) < (0 if name == "workers" else 1):
            raise UserError(f"--{name.replace('_', '-')} must be at least {0 if name == 'workers' else 1}")
    if not 0 <= cfg.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if min(cfg.jitter, cfg.crop_padding, cfg.train_subset, cfg.test_subset) < 0:
        raise UserError("--jitter, --crop-padding, --train-subset and --test-subset cannot be negative")
    with setup(cfg.device, cfg.precision, cfg.seed, cfg.threads) as rt:
        if cfg.experiment in ("cifar", "imagenet"):
            return train_classifier(cfg, rt, argv)
        from . import experiments
        return getattr(experiments, cfg.experiment)(cfg, rt, argv)


def main(argv=None, prog="python -m milestones train 03_alexnet"):
    return train_command(Config, PRESETS, run, argv, prog, __doc__)


if __name__ == "__main__":
    main()
