"""One CIFAR-10 net trained with the paper's recipe (section 4.2), for train.py (one model) and degradation.py
(several in one run):

    SGD, momentum 0.9, weight decay 1e-4 on every weight, batch 128, cross-entropy
    LR 0.1, divided by 10 at 32k and 48k iterations, stop at 64k (--lr-drops 0.5,0.75 of --steps)
    ResNet-110 and deeper: LR 0.01 for the first 400 iterations (warm-up), then 0.1
    augmentation: 4-pixel padding, a random 32x32 crop, a random horizontal flip
"""

import torch
import torch.nn.functional as F

from common import data
from common.data.augment import normalize, random_crop, random_hflip
from common.data.cifar import MEAN, STD
from common.errors import UserError
from common.loop import evaluate_classifier, one_cycle, optimizer_step
from common.session import Session

from .model import build

MILESTONE = "04_resnet"
DATASET = "CIFAR-10 (JPEG-q75 mirror)"


def parse_drops(text: str) -> list[float]:
    """'0.5,0.75' -> [0.5, 0.75]: the fractions of the run at which the LR is divided by 10."""
    try:
        drops = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        drops = [-1.0]
    if any(not 0 < f < 1 for f in drops):
        raise UserError(f"--lr-drops takes fractions of the run between 0 and 1, e.g. 0.5,0.75; got {text!r}")
    return sorted(drops)


def check_recipe(cfg) -> None:
    """The optimizer and schedule flags, checked before any data is read."""
    parse_drops(cfg.lr_drops)
    if cfg.nesterov and cfg.momentum <= 0:
        raise UserError("--nesterov needs --momentum > 0")
    if not 0 <= cfg.label_smoothing < 1:
        raise UserError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")


def make_model(name: str, cfg):
    """The net called `name` (resnet20, plain56, ...) with --shortcut, --width and --zero-init-residual applied."""
    if cfg.width < 1:
        raise UserError(f"--width is the number of filters of the first stage, >= 1 (the paper: 16); got {cfg.width}")
    try:
        model = build(name, shortcut=cfg.shortcut, width=cfg.width)
    except ValueError as e:
        raise UserError(f"--model {name}: {e}") from None
    model.reset_parameters(zero_init_residual=cfg.zero_init_residual)
    return model


def warmup_for(name: str, cfg) -> int:
    """Steps at LR/10 before the schedule starts: --warmup-steps, or the paper's rule for 110+ layers."""
    if cfg.warmup_steps >= 0:
        return cfg.warmup_steps
    depth = int("".join(c for c in name if c.isdigit()))
    return 400 if depth >= 110 else 0  # the paper: 0.01 "until the training error is below 80% (about 400 iterations)"


def lr_lambda(total: int, drops: list[float], warmup: int):
    """Multiplier of the base LR at a step: 0.1 during warm-up, then /10 at each drop."""
    bounds = [round(f * total) for f in drops]
    return lambda s: 0.1 if s < warmup else 0.1 ** sum(s >= b for b in bounds)


def load_data(cfg, rt):
    """(train, test) loaders of CIFAR-10; --test-size keeps the first N test images."""
    splits = data.load("cifar10", cfg.data_dir)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    if cfg.test_size < 0:
        raise UserError(f"--test-size must be >= 0, got {cfg.test_size}")
    if cfg.test_size:
        x_test, y_test = x_test[:cfg.test_size], y_test[:cfg.test_size]
    try:
        train = data.TensorLoader(x_train, y_train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                  device=rt.device, seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    if len(train) == 0:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(x_train)})")
    test = data.TensorLoader(x_test, y_test, batch_size=1000, device=rt.device, rank=rt.rank,
                             world_size=rt.world_size)
    return train, test


def fit(cfg, rt, name: str, train, test, run, one_of_several: bool = False) -> tuple[Session, list]:
    """Train net `name` in `run`, logging the running training error and the test error.

    Returns its Session, not yet saved (the caller's sess.summary() or sess.finish() writes the final
    checkpoint), and the training-error curve [(step, error), ...]. A net that is one of several in the run
    gets its own checkpoint-<name>.pt and rows tagged with its name, and never resumes."""
    model = make_model(name, cfg).to(rt.device)
    channels_last = rt.device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)

    def prepare(x, augment=False):  # uint8 (B, 3, 32, 32) -> normalised float on the device
        x = normalize(x.to(rt.device, non_blocking=True), MEAN, STD)
        if augment:  # zero padding after normalising pads with the mean colour, as mean-subtracted zeros do
            x = random_hflip(random_crop(x, 32, padding=4))
        return x.contiguous(memory_format=memory_format)

    def prepare_flipped(x):  # (2, B, 3, 32, 32): each test image and its mirror image
        x = prepare(x)
        return torch.stack([x, x.flip(-1)])

    total = cfg.steps or cfg.epochs * len(train)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    factor = (one_cycle(total) if cfg.schedule == "onecycle"
              else lr_lambda(total, parse_drops(cfg.lr_drops), warmup_for(name, cfg)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    scaler = rt.grad_scaler()
    own = dict(checkpoint=run.dir / f"checkpoint-{name}.pt", tag={"model": name}) if one_of_several else {}
    sess = Session(cfg, rt, run, total, len(train), desc=f"{MILESTONE} {name}", **own)
    sess.attach(model, opt, sched, scaler, resume=not one_of_several)
    net = rt.wrap(model, compile=cfg.compile)
    sums = torch.zeros(3, device=rt.device)  # loss sum, wrong, count since the last log point (no host sync)
    curve = []  # (step, running training error): the paper's Figure 6 plots this
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for x, y in train.batches(epoch, start):
                x, y = prepare(x, cfg.augment), y.to(rt.device, non_blocking=True)
                with rt.autocast():
                    logits = net(x)  # (B, 10)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                optimizer_step(loss, opt, scaler)
                sched.step()
                sums[0] += loss.detach() * y.numel()
                sums[1] += (logits.argmax(-1) != y).sum()
                sums[2] += y.numel()
                sess.step(cfg.batch_size)  # the global batch: ranks step in lockstep
                if sess.due("log"):
                    loss_sum, wrong, n = rt.all_reduce_sum(sums).tolist()
                    sums.zero_()
                    curve.append((sess.step_count, wrong / n))
                    sess.log("train", loss=loss_sum / n, error=wrong / n, lr=sched.get_last_lr()[0])
                if sess.due("eval"):
                    sess.log("test", **evaluate_classifier(net, test, rt, prepare))
                    if cfg.flip_test:
                        sess.log("test_flip", **evaluate_classifier(net, test, rt, prepare_flipped))
                if not sess.running:
                    break
    return sess, curve
