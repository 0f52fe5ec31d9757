"""One AlexNet trained with the paper's recipe (Section 5): the loop that the cifar and imagenet experiments
run, and that the ablations run once per arm.

    SGD, batch 128, momentum 0.9, weight decay 0.0005; LR 0.01, divided by 10 when the validation error stops
    improving (or a cosine decay); random crops, mirrors and PCA colour jitter; optionally ten-patch testing.
"""

import itertools
import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from common import data
from common.data.cifar import MEAN as CIFAR_MEAN, STD as CIFAR_STD
from common.errors import UserError
from common.loop import evaluate_classifier, optimizer_step
from common.session import Session, open_run

from .data import IMAGENET_MEAN, IMAGENET_STD, Augment, Epochs, fit_pca, imagenet_loaders
from .figures import save_kernel_grid
from .model import CIFAR, IMAGENET, AlexNet

MILESTONE = "03_alexnet"


def build_model(cfg, num_classes: int) -> AlexNet:
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


def model_name(cfg) -> str:
    name = "alexnet" if cfg.experiment == "imagenet" else f"alexnet-cifar-w{cfg.width:g}"
    if cfg.channels and cfg.experiment != "imagenet":
        name = "alexnet-cifar-c" + cfg.channels.replace(",", "-")
    off = [f for f, on in (("lrn", cfg.lrn), ("overlap", cfg.overlap), ("dropout", cfg.dropout > 0)) if not on]
    return name + ("" if cfg.groups == 2 else "-1gpu") + "".join(f"-no{f}" for f in off) + \
        ("" if cfg.activation == "relu" else f"-{cfg.activation}")


def cifar_data(cfg, rt):
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


def imagenet_data(cfg, rt):
    """The same five, from <data root>/imagenet/{train,val}; the validation images are the test set."""
    root = data.data_root(cfg.data_dir)
    train, val, classes = imagenet_loaders(root, cfg.batch_size, cfg.workers, rt.rank, rt.world_size, cfg.seed)
    sample = torch.cat([x for x, _ in itertools.islice(train, 8)])  # a few batches are enough for 3x3 statistics
    eigval, eigvec = fit_pca(sample)
    aug = Augment(rt.device, 227, 0, IMAGENET_MEAN, IMAGENET_STD, eigval, eigvec, cfg.jitter, cfg.channels_last)
    return Epochs(train, cfg.seed), None, val, aug, classes


def sgd(cfg, model) -> torch.optim.SGD:
    """Section 5's update, v <- 0.9 v - 0.0005 eps w - eps <dL/dw>;  w <- w + v. torch's SGD keeps v / -eps
    instead (b <- 0.9 b + <dL/dw> + 0.0005 w;  w <- w - eps b): the same steps while eps is constant."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_schedule(cfg, opt, total: int):
    if cfg.schedule == "cosine":  # stepped every batch
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    # the paper's: LR / 10 once the validation error has not improved for `patience` evaluations
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=cfg.patience - 1,
                                                      min_lr=cfg.lr * 0.1 ** cfg.max_drops)


def train_classifier(cfg, rt, argv=None) -> dict:
    """One AlexNet training run, the paper's loop: SGD with momentum and weight decay, LR / 10 on plateaus."""
    train, val, test, aug, num_classes = (imagenet_data if cfg.experiment == "imagenet" else cifar_data)(cfg, rt)
    model = build_model(cfg, num_classes).to(rt.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    total = cfg.steps or cfg.epochs * len(train)
    opt = sgd(cfg, model)
    sched = lr_schedule(cfg, opt, total)
    scaler = rt.grad_scaler()
    sess = Session(cfg, rt, open_run(cfg, rt, MILESTONE, model_name(cfg), argv), total, len(train))
    sess.attach(model, opt, sched, scaler)
    net = rt.wrap(model, compile=cfg.compile)

    def prepare(x):  # the test view: (B, 3, s, s) centre crops, or with --ten-crop (10, B, 3, s, s) patches
        return aug.test(x, ten_crop=cfg.ten_crop)

    wrong = torch.zeros(2, device=rt.device)  # training mistakes and examples since the last evaluation
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for x, y in train.batches(epoch, start):
                x, y = aug.train(x), y.to(rt.device, non_blocking=True)  # random crop, mirror, colour jitter
                with rt.autocast():
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
                optimizer_step(loss, opt, scaler)
                if cfg.schedule == "cosine":
                    sched.step()
                sess.step(cfg.batch_size)  # the global batch: ranks step in lockstep
                wrong[0] += (logits.argmax(-1) != y).sum()
                wrong[1] += y.numel()  # a Python number: no tensor copied to the device
                if sess.due("log"):
                    sess.log("train", loss=loss, lr=opt.param_groups[0]["lr"])
                if sess.due("eval"):  # once an epoch by default
                    row = dict(train_error=(wrong[0] / wrong[1].clamp_min(1)).item())
                    wrong.zero_()
                    if val is not None:
                        row.update({f"val_{k}": v for k, v in evaluate_classifier(net, val, rt, prepare).items()})
                    row.update(evaluate_classifier(net, test, rt, prepare))
                    if cfg.schedule == "plateau":  # ImageNet: its validation set is the held-out set we test on
                        sched.step(row.get("val_error", row["error"]))
                    sess.log("test", **row)
                if not sess.running:
                    break
    test_err = sess.results["test_error"]
    more = {}
    if cfg.train_eval and cfg.experiment != "imagenet":  # the training images as the test sees them
        seen = data.TensorLoader(*(t[:cfg.train_eval] for t in train.tensors), batch_size=500, device=rt.device,
                                 rank=rt.rank, world_size=rt.world_size)
        more["train_set_error"] = evaluate_classifier(net, seen, rt, prepare)["error"]
    paper = 0.407 if cfg.experiment == "imagenet" and model_name(cfg) == "alexnet" and cfg.ten_crop else None
    card = sess.summary(
        dataset="ImageNet (ILSVRC-2012 val)" if cfg.experiment == "imagenet" else "CIFAR-10 (JPEG-q75 mirror)",
        metric="top1_error" + ("_10crop" if cfg.ten_crop else ""), value=test_err, paper_value=paper,
        paper_source="Krizhevsky et al. 2012, Table 2: 1 CNN, 40.7% top-1 on ILSVRC-2012 val" if paper else None,
        run_dir=str(sess.run.dir), **more,
    )
    if rt.is_main:
        save_kernel_grid(model, sess.run.dir / "kernels.png")
        if more:
            print(f"error on {min(cfg.train_eval, len(train.tensors[0])):,} training images: "
                  f"{more['train_set_error']:.2%} (eval mode; test - train = {test_err - more['train_set_error']:+.2%})")
        print(f"{card['model']}: test error {test_err:.2%} on {card['dataset']}; {card['train_seconds']:.0f} s, "
              f"{sess.rate:,.0f} examples/s; run record: {sess.run.dir}")
    return card
