"""The comparisons that made the paper, each a function `name(cfg, rt, argv) -> summary card`.

    relu_vs_tanh  Figure 1: epochs a four-layer CNN needs to reach 25% training error on CIFAR-10
    ablations     the full design against itself without LRN, without dropout, without overlapping pooling
    groups        the two-GPU split (grouped conv2/4/5) against one GPU, same maps and half the maps
"""

from dataclasses import replace

import torch
import torch.nn.functional as F

from common import data
from common.data.augment import normalize
from common.data.cifar import MEAN, STD
from common.device import count_params
from common.errors import UserError
from common.loop import evaluate_classifier, optimizer_step
from common.plot import line_plot
from common.session import Session, open_run

from .model import CIFAR, FourLayerCNN
from .recipe import MILESTONE, train_classifier


def _no_resume(cfg):
    if cfg.resume:
        raise UserError(f"--resume continues one training run; the {cfg.experiment} experiment starts its arms "
                        f"from scratch (resume an arm with --experiment cifar --resume RUN_DIR)")


# ---------------------------------------------------------------------------------------------------------
# Figure 1: ReLU vs tanh
# ---------------------------------------------------------------------------------------------------------

def epochs_to_target(cfg, rt, run, activation: str, lr: float, train, train_eval, prepare):
    """Train a FourLayerCNN until its error on the training images is <= target. (epochs or None, curve, card)"""
    torch.manual_seed(cfg.seed)
    model = FourLayerCNN(activation).to(rt.device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = rt.grad_scaler()
    sess = Session(cfg, rt, run, cfg.steps or cfg.epochs * len(train), len(train), tag={"model": activation},
                   checkpoint=run.dir / f"checkpoint-{activation}.pt", desc=f"figure 1, {activation}")
    sess.attach(model, opt, None, scaler, resume=False)
    curve = []  # training error after each epoch
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for x, y in train.batches(epoch, start):
                with rt.autocast():
                    logits = model(prepare(x))
                loss = F.cross_entropy(logits.float(), y)
                optimizer_step(loss, opt, scaler)
                sess.step(len(y))
                if sess.due("log"):
                    sess.log("train", loss=loss)
                if not sess.running:
                    break
            curve.append(evaluate_classifier(model, train_eval, rt, prepare)["error"])  # all of it, in eval mode
            sess.log("train_set", error=curve[-1])
            if curve[-1] <= cfg.target_error:
                break
    sess.finish()
    return (len(curve) if curve[-1] <= cfg.target_error else None), curve, sess.card()


def relu_vs_tanh(cfg, rt, argv=None) -> dict:
    """Figure 1: epochs a four-layer CNN needs to reach --target-error training error, ReLU vs tanh"""
    _no_resume(cfg)
    x, y = data.load("cifar10", cfg.data_dir)["train"]
    if cfg.train_subset:
        x, y = x[:cfg.train_subset], y[:cfg.train_subset]
    if len(x) < cfg.batch_size:
        raise UserError(f"--train-subset {len(x)} is smaller than one batch ({cfg.batch_size})")
    if not 0 < cfg.target_error < 1:
        raise UserError(f"--target-error must be in (0, 1), got {cfg.target_error}")
    x, y = x.to(rt.device), y.to(rt.device)
    train = data.TensorLoader(x, y, batch_size=cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)
    train_eval = data.TensorLoader(x, y, batch_size=1000)

    def prepare(b):  # no augmentation and no regularisation: Figure 1 measures raw optimisation speed
        return normalize(b, MEAN, STD)

    run = open_run(cfg, rt, MILESTONE, "fig1-4layer-cnn", argv)
    results, cards = {}, {}
    for act, lr in (("relu", cfg.lr), ("tanh", cfg.tanh_lr or cfg.lr)):
        epochs, curve, cards[act] = epochs_to_target(cfg, rt, run, act, lr, train, train_eval, prepare)
        seconds = cards[act]["train_seconds"]
        results[act] = dict(epochs=epochs, seconds=round(seconds, 1), lr=lr, curve=[round(c, 4) for c in curve])
        if rt.is_main:
            reached = f"reached {cfg.target_error:.0%} in {epochs} epochs" if epochs else \
                f"did not reach {cfg.target_error:.0%} within {cfg.epochs} epochs"
            print(f"{act}: {reached} ({seconds:.0f} s); training error per epoch: "
                  + " ".join(f"{c:.3f}" for c in curve))
    r, t = results["relu"], results["tanh"]
    ratio = (t["epochs"] or cfg.epochs) / r["epochs"] if r["epochs"] else None
    if rt.is_main:
        plot = line_plot({f"{a} (lr {v['lr']:g})": (range(1, len(v["curve"]) + 1), v["curve"])
                          for a, v in results.items()} |
                         {f"{cfg.target_error:.0%}": ([1, max(len(r["curve"]), len(t["curve"]))], [cfg.target_error] * 2)},
                         run.dir / "relu_vs_tanh.png", title="Four-layer CNN on CIFAR-10 (cf. paper Fig. 1)",
                         xlabel="epoch", ylabel="training error")
        bound = "" if t["epochs"] else " (tanh never got there: a lower bound)"
        print(f"epochs to {cfg.target_error:.0%} training error: relu {r['epochs']}, tanh {t['epochs']}; "
              f"tanh / relu = {ratio if ratio is None else round(ratio, 2)}{bound}  (paper: about 6)")
        print(f"curves: {plot}\nrun record: {run.dir}")
    return run.summary(
        dataset=f"CIFAR-10 (JPEG-q75 mirror), {len(x)} training images",
        metric=f"epochs_to_{cfg.target_error:.0%}_train_error (tanh / relu)", value=ratio, paper_value=6.0,
        paper_source="Krizhevsky et al. 2012, Figure 1: ReLU reaches 25% training error six times faster than tanh",
        params=count_params(FourLayerCNN()), train_seconds=round(sum(c["train_seconds"] for c in cards.values()), 2),
        examples_per_second=round(sum(c["examples_per_second"] for c in cards.values()) / 2, 1),  # same cost per example
        epochs=cfg.epochs, relu=results["relu"], tanh=results["tanh"], tanh_reached=t["epochs"] is not None,
    )


# ---------------------------------------------------------------------------------------------------------
# Ablations and the two-GPU split: whole training runs of the CIFAR-10 variant, one per arm
# ---------------------------------------------------------------------------------------------------------

# what the paper reports for each design choice (ImageNet top-1/top-5 unless stated)
PAPER_EFFECT = {
    "no LRN": "LRN cuts top-1/top-5 error by 1.4%/1.2%; on CIFAR-10 a four-layer CNN: 13% test error without, 11% with",
    "no dropout": "without dropout the net overfits substantially (no number given); dropout doubles the "
                  "iterations needed to converge",
    "no overlapping pooling": "overlapping pooling (z=3, s=2) cuts top-1/top-5 error by 0.4%/0.3% vs z=2, s=2",
    "one GPU, same maps": "(not in the paper: the same design without the split, so every conv sees all maps)",
    "one GPU, half the maps": "the two-GPU net beats a one-GPU net with half the kernels in conv1-4 by "
                              "1.7%/1.2% top-1/top-5",
}


def _compare(cfg, rt, argv, arms: dict, name: str) -> dict:
    _no_resume(cfg)
    base = replace(cfg, experiment="cifar")  # each arm is a cifar run of its own, with its own run record
    cards = {arm: train_classifier(replace(base, **change), rt, argv) for arm, change in arms.items()}
    run = open_run(cfg, rt, MILESTONE, name, argv)
    ref = next(iter(cards.values()))["value"]
    rows = {arm: dict(model=c["model"], test_error=c["value"], delta_vs_first=round(c["value"] - ref, 4),
                      params=c["params"], train_seconds=c["train_seconds"], run_dir=c["run_dir"],
                      paper=PAPER_EFFECT.get(arm, "")) for arm, c in cards.items()}
    for arm, row in rows.items():
        run.log(0, "test", arm=arm, **{k: v for k, v in row.items() if k != "paper"})
    if rt.is_main:
        print(f"\n{name} on CIFAR-10 (JPEG-q75 mirror), {cfg.preset} preset:")
        for arm, row in rows.items():
            print(f"  {arm:<24} test error {row['test_error']:.2%} ({row['delta_vs_first']:+.2%})  "
                  f"{row['params']:>10,} params   paper: {row['paper'] or '-'}")
        print(f"run record: {run.dir}")
    first = next(iter(cards.values()))
    return run.summary(
        dataset="CIFAR-10 (JPEG-q75 mirror)", metric="test_error (full design)", value=ref, paper_value=None,
        paper_source="Krizhevsky et al. 2012, Sections 3.3, 3.4, 3.2, 4.2", params=first["params"],
        train_seconds=round(sum(c["train_seconds"] for c in cards.values()), 2),
        examples_per_second=first["examples_per_second"], epochs=first["epochs"], steps=first["steps"], arms=rows,
    )


def ablations(cfg, rt, argv=None) -> dict:
    """the CIFAR-10 variant in full and without LRN, without dropout, without overlapping pooling (a run each)"""
    arms = {"full design": {}, "no LRN": dict(lrn=False), "no dropout": dict(dropout=0.0),
            "no overlapping pooling": dict(overlap=False)}
    return _compare(cfg, rt, argv, arms, "ablations")


def groups(cfg, rt, argv=None) -> dict:
    """the two-GPU split (grouped conv2/4/5) against one GPU with the same maps and with half the maps"""
    maps = [max(2, 2 * round(c * cfg.width / 2)) for c in CIFAR.channels]
    half = [max(1, c // 2) for c in maps[:4]] + [maps[4]]  # the paper kept conv5 (and the fc layers) full size
    arms = {"two GPUs (grouped)": dict(groups=2), "one GPU, same maps": dict(groups=1),
            "one GPU, half the maps": dict(groups=1, channels=",".join(map(str, half)))}
    return _compare(cfg, rt, argv, arms, "groups")
