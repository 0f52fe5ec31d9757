"""Train a CIFAR-10 ResNet (or plain net) of He et al. 2015, or run the paper's degradation experiment.

    python -m milestones train 04_resnet                               # ResNet-20, the paper's recipe (GPU)
    python -m milestones train 04_resnet --preset quick                # ResNet-20 on a CPU in ~15 minutes
    python -m milestones train 04_resnet --model resnet110             # 0.01 warm-up for the first 400 steps
    python -m milestones train 04_resnet --experiment degradation --preset quick   # plain vs residual at depth
"""

import time
import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common import data
from common.checkpoint import restore, save_checkpoint
from common.config import TrainConfig, arg, to_dict, train_command
from common.data.augment import normalize, random_crop, random_hflip
from common.data.cifar import MEAN, STD
from common.device import count_params, setup
from common.errors import UserError
from common.logging import Throughput, progress
from common.loop import check_finite, evaluate_classifier, open_run, optimizer_step, save_on_interrupt

from .model import build, count_multiply_adds

MILESTONE = "04_resnet"
DATASET = "CIFAR-10 (JPEG-q75 mirror)"
PAPER_ERROR = {"resnet20": 0.0875, "resnet32": 0.0751, "resnet44": 0.0717, "resnet56": 0.0697,
               "resnet110": 0.0643, "resnet1202": 0.0793}  # Table 6 (ResNet-110: best of 5 runs)


@dataclass
class Config(TrainConfig):
    experiment: str = arg("cifar", "cifar: train one model; degradation: plain vs residual at 20 and 56 layers "
                          "(the paper's Figure 6)", choices=("cifar", "degradation"))
    model: str = arg("resnet20", "resnet<6n+2> (20, 32, 44, 56, 110, 1202) or plain<6n+2>")
    models: str = arg("plain20,plain56,resnet20,resnet56", "degradation: the models trained, comma-separated")
    shortcut: str = arg("A", "resnet shortcuts: A zero-padded identity (the paper's CIFAR nets), B projection "
                        "where the shape changes, C projection everywhere", choices=("A", "B", "C"))
    momentum: float = arg(0.9, "SGD momentum")
    weight_decay: float = arg(1e-4, "L2 weight decay (on every weight, as in the paper)")
    lr_drops: str = arg("0.5,0.75", "divide the LR by 10 at these fractions of the run (the paper: 32k and 48k "
                        "of 64k iterations)")
    warmup_steps: int = arg(-1, "steps at LR/10 first; -1 = the paper's rule: 400 for 110+ layers, else 0")
    augment: bool = arg(True, "4-pixel zero pad + random 32x32 crop + horizontal flip, on the device")
    zero_init_residual: bool = arg(False, "start every residual branch's last BN gamma at 0 (Goyal et al. 2017; "
                                   "not the paper)")
    channels_last: typing.Optional[bool] = arg(None, "NHWC memory layout (default: on for CUDA, off elsewhere)")
    eval_every: int = arg(0, "evaluate on the test set every N steps (0 = once an epoch); always at the end")
    test_size: int = arg(0, "evaluate on the first N test images only (0 = all 10,000)")
    log_every: int = arg(50, "log the running training loss and error every N steps")
    ckpt_every: int = arg(1000, "save checkpoint.pt every N steps (and at the end)")


PRESETS = {
    # the paper: SGD 0.9, wd 1e-4, batch 128, LR 0.1 / 10 at 32k and 48k, stop at 64k (= 164 epochs)
    "paper": dict(steps=64000, batch_size=128, lr=0.1),
    # the same recipe in bf16 (channels_last is on by itself on CUDA): ~8.75% for ResNet-20 on one GPU
    "default": dict(steps=64000, batch_size=128, lr=0.1, precision="bf16"),
    # a 2-core CPU in ~8 minutes: the paper's schedule shape squeezed into 2,400 steps (6 epochs), in bf16
    # autocast (about twice fp32's speed on a CPU with AVX512-BF16)
    "quick": dict(steps=2400, batch_size=128, lr=0.1, eval_every=600, precision="bf16"),
    "smoke": dict(model="resnet8", steps=6, batch_size=32, lr=0.05, test_size=256, eval_every=3, log_every=2,
                  ckpt_every=4),
    "degradation/paper": dict(steps=64000, batch_size=128, lr=0.1, eval_every=2000),
    "degradation/default": dict(steps=64000, batch_size=128, lr=0.1, precision="bf16", eval_every=2000),
    # four nets in ~10 CPU minutes: only the start of Figure 6 (see NOTES.md). At LR 0.1 from the first step
    # the 56-layer nets blew up and died (loss stuck at ln 10); a short 0.01 warm-up (the paper's ResNet-110 rule)
    # keeps them alive, though ResNet-56 still spikes when the LR goes up (NOTES.md)
    "degradation/quick": dict(steps=250, batch_size=128, lr=0.1, warmup_steps=60, lr_drops="", eval_every=250,
                              test_size=1000, log_every=10),
    "degradation/smoke": dict(models="plain8,plain14,resnet8,resnet14", steps=4, batch_size=16, lr=0.05,
                              test_size=64, log_every=2, eval_every=0),
}


def parse_drops(text: str) -> list[float]:
    try:
        drops = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        drops = [-1.0]
    if any(not 0 < f < 1 for f in drops):
        raise UserError(f"--lr-drops takes fractions of the run between 0 and 1, e.g. 0.5,0.75; got {text!r}")
    return sorted(drops)


def make_model(name: str, cfg: Config):
    try:
        model = build(name, shortcut=cfg.shortcut)
    except ValueError as e:
        raise UserError(f"--model {name}: {e}") from None
    model.reset_parameters(zero_init_residual=cfg.zero_init_residual)
    return model


def warmup_for(name: str, cfg: Config) -> int:
    if cfg.warmup_steps >= 0:
        return cfg.warmup_steps
    depth = int("".join(c for c in name if c.isdigit()))
    return 400 if depth >= 110 else 0  # the paper: 0.01 "until the training error is below 80% (about 400 iterations)"


def lr_lambda(total: int, drops: list[float], warmup: int):
    """Multiplier of the base LR at a step: 0.1 during warm-up, then /10 at each drop."""
    bounds = [round(f * total) for f in drops]
    return lambda s: 0.1 if s < warmup else 0.1 ** sum(s >= b for b in bounds)


def fit(cfg: Config, rt, name: str, train, test, logger, state=None, ckpt_path=None) -> dict:
    """Train one model with the paper's recipe; log running training error and test error. Returns results."""
    ckpt_path = ckpt_path or logger.checkpoint_path
    model = make_model(name, cfg).to(rt.device)
    channels_last = rt.device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    mean_std = (MEAN, STD)

    def prepare(x, augment=False):  # uint8 (B, 3, 32, 32) -> normalised float on the device
        x = normalize(x.to(rt.device, non_blocking=True), *mean_std)
        if augment:  # zero padding after normalising pads with the mean colour, as mean-subtracted zeros do
            x = random_hflip(random_crop(x, 32, padding=4))
        return x.contiguous(memory_format=memory_format)

    steps_per_epoch = len(train)
    total = cfg.steps or cfg.epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, parse_drops(cfg.lr_drops),
                                                             warmup_for(name, cfg)))
    scaler = rt.grad_scaler()
    step, base_seconds, test_err, test_loss = 0, 0.0, None, None
    if state is not None:
        restore(state, model, opt, sched, scaler)
        step, base_seconds = state["step"], state.get("train_seconds", 0.0)
        test_err, test_loss = state.get("test_error"), state.get("test_loss")
    net = rt.wrap(model, compile=cfg.compile)
    tag = {"model": name}

    def save():
        if rt.is_main:
            save_checkpoint(ckpt_path, model, opt, sched, scaler, step=step, config=to_dict(cfg),
                            train_seconds=base_seconds + time.time() - t_start, test_error=test_err,
                            test_loss=test_loss)
        return ckpt_path

    eval_every = cfg.eval_every or steps_per_epoch
    meter, t_start = Throughput(warmup=2), time.time()  # leave out the first steps (compile, autotuning)
    sums = torch.zeros(3, device=rt.device)  # loss sum, wrong, count since the last log
    curve = []  # (step, running training error)
    bar = progress(total=total, initial=step, desc=f"{MILESTONE} {name}", rt=rt, unit="step")
    with save_on_interrupt(save, rt):
        while step < total:
            epoch, start = divmod(step, steps_per_epoch)
            for x, y in train.batches(epoch, start):
                meter.start()
                x, y = prepare(x, cfg.augment), y.to(rt.device, non_blocking=True)
                with rt.autocast():
                    logits = net(x)  # (B, 10)
                loss = F.cross_entropy(logits.float(), y)
                optimizer_step(loss, opt, scaler)
                sched.step()
                step += 1
                sums[0] += loss.detach() * y.numel()
                sums[1] += (logits.argmax(-1) != y).sum()
                sums[2] += y.numel()
                meter.stop(cfg.batch_size)  # the global batch: ranks step in lockstep
                if step % cfg.log_every == 0 or step == total:
                    loss_sum, wrong, n = rt.all_reduce_sum(sums).tolist()
                    sums.zero_()
                    check_finite(loss_sum, step)
                    curve.append((step, wrong / n))
                    bar.set_postfix(loss=f"{loss_sum / n:.3f}", err=f"{wrong / n:.1%}", ex_s=f"{meter.rate:,.0f}")
                    logger.log(step, "train", epoch=round(step / steps_per_epoch, 4), loss=loss_sum / n,
                               error=wrong / n, lr=sched.get_last_lr()[0], examples_per_second=meter.rate, **tag)
                bar.update(1)
                if step % eval_every == 0 or step == total:
                    test_loss, test_err = evaluate_classifier(net, test, rt, prepare).values()
                    logger.log(step, "test", epoch=round(step / steps_per_epoch, 4), loss=test_loss,
                               error=test_err, **tag)
                    if rt.is_main:
                        bar.write(f"{name} step {step} (epoch {step / steps_per_epoch:.2f}): test loss "
                                  f"{test_loss:.4f}, test error {test_err:.2%}")
                if step % cfg.ckpt_every == 0 and step < total:
                    save()
                if step == total:
                    break
    bar.close()
    train_seconds = base_seconds + time.time() - t_start
    save()
    return dict(model=model, steps=step, epochs=step / steps_per_epoch, test_error=test_err, test_loss=test_loss,
                train_error=curve[-1][1] if curve else None, curve=curve, train_seconds=train_seconds,
                examples_per_second=meter.rate)  # the global batch was counted


def load_data(cfg: Config, rt):
    splits = data.load("cifar10", cfg.data_dir)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    if cfg.test_size < 0:
        raise UserError(f"--test-size must be >= 0, got {cfg.test_size}")
    if cfg.test_size:
        x_test, y_test = x_test[:cfg.test_size], y_test[:cfg.test_size]
    for name in ("log_every", "ckpt_every"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.eval_every < 0:
        raise UserError(f"--eval-every must be >= 0, got {cfg.eval_every}")
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


def model_tflops(model, examples_per_second: float) -> float:
    """Achieved model TFLOP/s: 2 FLOPs per multiply-add, backward ~2x forward."""
    return 3 * 2 * count_multiply_adds(model, (1, 3, 32, 32)) * examples_per_second / 1e12


def run_cifar(cfg: Config, rt, argv) -> dict:
    make_model(cfg.model, cfg)  # a bad --model fails before any data is read
    parse_drops(cfg.lr_drops)
    train, test = load_data(cfg, rt)
    name = cfg.model + ("" if cfg.model.startswith("plain") or cfg.shortcut == "A" else f"-{cfg.shortcut}")
    logger, state = open_run(cfg, MILESTONE, name, rt, argv)
    r = fit(cfg, rt, cfg.model, train, test, logger, state)
    paper = PAPER_ERROR.get(cfg.model) if cfg.shortcut == "A" else None
    card = logger.summary(
        milestone=MILESTONE, model=name, dataset=DATASET, metric="test_error", value=r["test_error"],
        paper_value=paper, paper_source="He et al. 2015, Table 6 (CIFAR-10, 64k iterations)" if paper else None,
        params=count_params(r["model"]), train_seconds=round(r["train_seconds"], 2),
        examples_per_second=round(r["examples_per_second"], 1), device=rt.device_name, precision=rt.precision,
        world_size=rt.world_size, steps=r["steps"], epochs=round(r["epochs"], 3), seed=cfg.seed, preset=cfg.preset,
        test_loss=r["test_loss"], final_train_error=r["train_error"],
        model_tflops=round(model_tflops(r["model"].cpu(), r["examples_per_second"]), 4),
    )
    if rt.is_main:
        print(f"{name}: {DATASET} test error {r['test_error']:.2%}" + (f" (paper: {paper:.2%})" if paper else "")
              + f"; {r['train_seconds']:.0f} s, {r['examples_per_second']:,.0f} examples/s; run record: {logger.dir}")
    return card


def run(cfg: Config, argv=None) -> dict:
    with setup(cfg.device, cfg.precision, cfg.seed, cfg.threads) as rt:
        if cfg.experiment == "degradation":
            from .degradation import run_degradation
            return run_degradation(cfg, rt, argv)
        return run_cifar(cfg, rt, argv)


def main(argv=None, prog="python -m milestones train 04_resnet"):
    return train_command(Config, PRESETS, run, argv, prog, __doc__)


if __name__ == "__main__":
    main()
