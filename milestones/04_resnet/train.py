"""Train a CIFAR-10 ResNet (or plain net) of He et al. 2015, or run the paper's degradation experiment.

    python -m milestones train 04_resnet                               # ResNet-20, the paper's recipe (GPU)
    python -m milestones train 04_resnet --preset quick                # ResNet-20 on a CPU in ~8 minutes
    python -m milestones train 04_resnet --model resnet110             # 0.01 warm-up for the first 400 steps
    python -m milestones train 04_resnet --experiment degradation --preset quick   # plain vs residual at depth
"""

import typing
from dataclasses import dataclass

from common.config import TrainConfig, arg, train_command
from common.session import open_run

from .degradation import run_degradation
from .model import count_multiply_adds
from .recipe import DATASET, MILESTONE, check_recipe, fit, load_data, make_model

PAPER_ERROR = {"resnet20": 0.0875, "resnet32": 0.0751, "resnet44": 0.0717, "resnet56": 0.0697,
               "resnet110": 0.0643, "resnet1202": 0.0793}  # Table 6 (ResNet-110: best of 5 runs)


@dataclass
class Config(TrainConfig):
    experiment: str = arg("cifar", "what to run (the list below)")
    model: str = arg("resnet20", "resnet<6n+2> (20, 32, 44, 56, 110, 1202) or plain<6n+2>", only=("cifar",))
    models: str = arg("plain20,plain56,resnet20,resnet56", "the models trained, comma-separated",
                      only=("degradation",))
    shortcut: str = arg("A", "resnet shortcuts: A zero-padded identity (the paper's CIFAR nets), B projection "
                        "where the shape changes, C projection everywhere", choices=("A", "B", "C"))
    width: int = arg(16, "filters of the first stage; the stages have width, 2 width, 4 width (the paper: 16, "
                     "i.e. 16/32/64); narrower is ours, to fit more steps into a CPU budget")
    momentum: float = arg(0.9, "SGD momentum")
    weight_decay: float = arg(1e-4, "L2 weight decay (the paper's 1e-4), on every parameter (BN's too: the "
                              "paper does not say)")
    lr_drops: str = arg("0.5,0.75", "divide the LR by 10 at these fractions of the run (the paper: 32k and 48k "
                        "of 64k iterations)")
    schedule: str = arg("paper", "paper: --lr divided by 10 at --lr-drops (after --warmup-steps at lr/10); "
                        "onecycle (Smith & Topin 2017; not the paper): a quarter of the run up from lr/25, then "
                        "cosine to 0", choices=("paper", "onecycle"))
    nesterov: bool = arg(False, "Nesterov's momentum (Sutskever et al. 2013; not the paper) instead of the heavy "
                         "ball")
    warmup_steps: int = arg(-1, "steps at LR/10 first; -1 = the paper's rule: 400 for 110+ layers, else 0")
    augment: bool = arg(True, "4-pixel zero pad + random 32x32 crop + horizontal flip, on the device")
    zero_init_residual: bool = arg(False, "start every residual branch's last BN gamma at 0 (Goyal et al. 2017; "
                                   "not the paper)")
    channels_last: typing.Optional[bool] = arg(None, "NHWC memory layout (default: on for CUDA, off elsewhere)")
    test_size: int = arg(0, "evaluate on the first N test images only (0 = all 10,000)")
    label_smoothing: float = arg(0.0, "cross-entropy against targets mixed with this much of the uniform "
                                 "distribution (Szegedy et al. 2016; not the paper)")
    flip_test: bool = arg(False, "also report the test error of the softmax averaged over each test image and "
                          "its mirror image (test-time augmentation; not the paper), as test_flip_error")


PRESETS = {
    # the paper: SGD 0.9, wd 1e-4, batch 128, LR 0.1 / 10 at 32k and 48k, stop at 64k (= 164 epochs)
    "paper": dict(steps=64000, batch_size=128, lr=0.1),
    # the same recipe in bf16 where the GPU has it (--precision auto; channels_last is on by itself on CUDA):
    # ~8.75% for ResNet-20 on one GPU
    "default": dict(steps=64000, batch_size=128, lr=0.1, precision="auto"),
    # <= 5 minutes on a 2-core AVX2 laptop (fp32): 600 steps (1.5 epochs) of the race's one-cycle recipe below,
    # NHWC, bf16 autocast where the CPU has it natively (auto: about twice fp32's speed with AVX512-BF16)
    "cifar/quick": dict(steps=600, batch_size=128, lr=0.2, nesterov=True, weight_decay=5e-4, schedule="onecycle",
                        eval_every=300, precision="auto", channels_last=True),
    # the CIFAR-10 race (not the paper's recipe): ResNet-20 unchanged, 26 epochs of one-cycle SGD (peak 0.2,
    # Nesterov, wd 5e-4: the usual short-schedule settings) in bf16 where native, NHWC, both cores; evaluated
    # once, at the end, single-view (the headline) and averaged with the mirror images (test_flip_error)
    "fast": dict(epochs=26, batch_size=128, lr=0.2, nesterov=True, weight_decay=5e-4, schedule="onecycle",
                 precision="auto", channels_last=True, threads=2, eval_every=10 ** 9, log_every=100,
                 ckpt_every=2000, flip_test=True),
    "smoke": dict(model="resnet8", steps=6, batch_size=32, lr=0.05, test_size=256, eval_every=3, log_every=2,
                  ckpt_every=4),
    "degradation/paper": dict(steps=64000, batch_size=128, lr=0.1, eval_every=2000),
    "degradation/default": dict(steps=64000, batch_size=128, lr=0.1, precision="auto", eval_every=2000),
    # four nets on a CPU budget (one thread, bf16 where native, channels_last): the paper's recipe and schedule
    # shape (LR 0.1, /10 at 50% and 75% of the run) in 4,000 steps of 64 (5.12 epochs), at a quarter of the
    # paper's widths (4/8/16, --width 4); every net starts with the paper's 0.01 warm-up (its rule for the
    # deepest nets) for 60 steps. The budget was fixed from the cost of a step before any run; what it shows is
    # in NOTES.md, from its record
    "degradation/quick": dict(steps=4000, batch_size=64, lr=0.1, width=4, warmup_steps=60, eval_every=125,
                              test_size=1000, log_every=10, channels_last=True, precision="auto"),
    "degradation/smoke": dict(models="plain8,plain14,resnet8,resnet14", steps=4, batch_size=16, lr=0.05,
                              test_size=64, log_every=2, eval_every=0),
}


def model_tflops(model, examples_per_second: float) -> float:
    """Achieved model TFLOP/s: 2 FLOPs per multiply-add, backward ~2x forward."""
    return 3 * 2 * count_multiply_adds(model, (1, 3, 32, 32)) * examples_per_second / 1e12


def run_cifar(cfg: Config, rt, argv) -> dict:
    """one ResNet (or plain net) on CIFAR-10 with the paper's recipe: test error against Table 6"""
    make_model(cfg.model, cfg)  # a bad --model fails before any data is read
    check_recipe(cfg)
    train, test = load_data(cfg, rt)
    name = cfg.model + ("" if cfg.model.startswith("plain") or cfg.shortcut == "A" else f"-{cfg.shortcut}")
    sess, curve = fit(cfg, rt, cfg.model, train, test, open_run(cfg, rt, MILESTONE, name, argv))
    test_err = sess.results["test_error"]
    paper = PAPER_ERROR.get(cfg.model) if cfg.shortcut == "A" else None
    card = sess.summary(
        dataset=DATASET, metric="test_error", value=test_err, paper_value=paper,
        paper_source="He et al. 2015, Table 6 (CIFAR-10, 64k iterations)" if paper else None,
        test_loss=sess.results["test_loss"], final_train_error=curve[-1][1] if curve else None,
        model_tflops=round(model_tflops(sess.model, sess.rate), 4),
        **({"test_flip_error": sess.results.get("test_flip_error")} if cfg.flip_test else {}),
    )
    if rt.is_main:
        flip = card.get("test_flip_error")
        print(f"{name}: {DATASET} test error {test_err:.2%}" + (f" (paper: {paper:.2%})" if paper else "")
              + (f", {flip:.2%} with the mirror images" if flip is not None else "")
              + f"; {card['train_seconds']:.0f} s, {sess.rate:,.0f} examples/s; run record: {sess.run.dir}")
    return card


EXPERIMENTS = {"cifar": run_cifar, "degradation": run_degradation}


def main(argv=None, prog="python -m milestones train 04_resnet"):
    return train_command(Config, PRESETS, EXPERIMENTS, argv, prog, __doc__, MILESTONE, preset_help={
        "fast": "The CIFAR-10 race (not the paper's recipe): ResNet-20, 26 epochs of one-cycle Nesterov SGD."})


if __name__ == "__main__":
    main()
