"""The comparisons that made the paper, each a function `name(cfg, rt, argv) -> summary card`.

    relu_vs_tanh  Figure 1: epochs a four-layer CNN needs to reach 25% training error on CIFAR-10
                  (--net layers-18pct: cuda-convnet's example net and protocol)
    ablations     the full design against itself without LRN, without dropout, without overlapping pooling
    groups        the two-GPU split (grouped conv2/4/5) against one GPU, same maps and half the maps
"""

import math
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import data
from common.data.augment import normalize
from common.data.cifar import MEAN, STD
from common.device import count_params
from common.config import parse_list, parse_rates
from common.errors import UserError
from common.loop import evaluate_classifier, optimizer_step
from common.session import Session, open_run

from .figures import NETS, figure_1
from .model import CIFAR, FourLayerCNN, Layers18pct
from .recipe import MILESTONE, train_classifier


def _no_resume(cfg):
    if cfg.resume:
        raise UserError(f"--resume continues one training run; the {cfg.experiment} experiment starts its arms "
                        f"from scratch (resume an arm with --experiment cifar --resume RUN_DIR)")


# ---------------------------------------------------------------------------------------------------------
# Figure 1: ReLU vs tanh
# ---------------------------------------------------------------------------------------------------------

ACTS = ("relu", "tanh")
BIAS_LR_18PCT = 2  # layer-params-18pct.cfg: epsB 0.002 against epsW 0.001


def init_fig1(net: FourLayerCNN, init: str) -> FourLayerCNN:
    if init == "modern":
        net.modern_init()
    else:  # paper: Section 5's biases; gaussian: the same weights with zero biases in both nets
        net.paper_init(relu_bias=1.0 if init == "paper" else 0.0)
    return net


def groups_18pct(net: Layers18pct, lr: float) -> list[dict]:
    """The parameter groups of layer-params-18pct.cfg: weights at epsW = lr, biases at epsB = 2 lr, every layer."""
    return [dict(params=[l.weight for l in net.layers], lr=lr),
            dict(params=[l.bias for l in net.layers], lr=BIAS_LR_18PCT * lr)]


def race(cfg, rt, run, lrs: list[float], train, train_eval, prepare, build=None,
         groups=None) -> tuple[list, list, dict]:
    """Train one net per (activation, learning rate), all from the same initial weights and on the same batches,
    and judge each activation at its fastest rate: its nets stop together the epoch one of them reaches
    --target-error training error (or at --epochs). All nets share one loop and one optimizer (parameter groups
    per net), so each batch is drawn once. `build(act)` makes an initialised net (default: the FourLayerCNN),
    `groups(net, lr)` its parameter groups (default: one, at lr). The training error after an epoch is measured
    in eval mode on `train_eval`, or with train_eval None, as cuda-convnet reported it: the running mean of the
    errors on that epoch's batches, each counted in the forward pass it was trained on.
    Returns (arms, curves, card); arms are (activation, lr), curves the training error after every epoch."""
    build = build or (lambda act: init_fig1(FourLayerCNN(act), cfg.init))
    groups = groups or (lambda net, lr: [dict(params=net.parameters(), lr=lr)])
    arms = [(act, lr) for act in ACTS for lr in lrs]
    nets = nn.ModuleList()
    for act, _ in arms:
        torch.manual_seed(cfg.seed)  # the same draw for every net: only the activation and the rate differ
        nets.append(build(act))
    nets = nets.to(rt.device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    opt = torch.optim.SGD([g for net, (_, lr) in zip(nets, arms) for g in groups(net, lr)],
                          lr=lrs[0], momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = rt.grad_scaler()
    sess = Session(cfg, rt, run, cfg.steps or cfg.epochs * len(train), len(train), tag={"model": "race"},
                   desc=f"figure 1, {len(arms)} nets")
    sess.attach(nets, opt, None, scaler, resume=False)
    alive = list(range(len(arms)))  # the arms still training
    alive_idx = torch.tensor(alive, device=rt.device)  # the same on the device, remade only when alive changes
    curves = [[] for _ in arms]  # training error after each epoch
    wrong, seen = torch.zeros(len(arms), device=rt.device), 0  # this epoch's training mistakes (running mean)
    t0 = time.monotonic()
    with sess:
        while sess.running and alive:
            epoch, start = sess.position()
            for x, y in train.batches(epoch, start):
                x = prepare(x)
                with rt.autocast():
                    logits = [nets[i](x).float() for i in alive]  # (B, 10) each
                losses = torch.stack([F.cross_entropy(z, y) for z in logits])  # (arms,)
                optimizer_step(losses.sum(), opt, scaler)  # the nets share no weights: each gets its own gradient
                wrong[alive_idx] += torch.stack([(z.argmax(-1) != y).sum() for z in logits]).float()
                seen += len(y)
                sess.step(len(y))
                if sess.due("log"):
                    values = losses.tolist()
                    for i, loss in zip(list(alive), values):
                        if not math.isfinite(loss):  # this rate blew up: the others go on without it
                            alive.remove(i)
                            print(f"{arms[i][0]} at lr {arms[i][1]:g} diverged at step {sess.step_count}")
                    alive_idx = torch.tensor(alive, device=rt.device)
                    finite = [v for v in values if math.isfinite(v)]
                    if finite:
                        sess.log("train", loss=sum(finite) / len(finite))
                if not sess.running or not alive:
                    break
            for i in alive:  # eval mode on the evaluation set, or the running mean over the epoch's batches
                curves[i].append(evaluate_classifier(nets[i], train_eval, rt, prepare)["error"]
                                 if train_eval is not None else (wrong[i] / max(seen, 1)).item())
            wrong.zero_()
            seen = 0
            sess.log("train_set", **{f"error_{arms[i][0]}_lr{arms[i][1]:g}": curves[i][-1] for i in alive})
            for act in ACTS:  # an activation is done the epoch one of its rates gets there
                if any(arms[i][0] == act and curves[i][-1] <= cfg.target_error for i in alive):
                    alive = [i for i in alive if arms[i][0] != act]
                    alive_idx = torch.tensor(alive, device=rt.device)
            if cfg.max_minutes and time.monotonic() - t0 > 60 * cfg.max_minutes:
                break  # time-boxed: the epoch just measured is the last
    sess.finish()
    return arms, curves, sess.card()


def crossing(curve: list[float], target: float) -> float | None:
    """The (fractional) epoch at which a per-epoch error curve first reaches `target`, read off the straight
    line between the two evaluations around it, as one reads it off a plotted curve; None if it never does."""
    for i, e in enumerate(curve):
        if e <= target:
            if i == 0:
                return 1.0
            before = curve[i - 1]
            return round(i + (before - target) / (before - e), 3)
    return None


def relu_vs_tanh(cfg, rt, argv=None) -> dict:
    """Figure 1: epochs a four-layer CNN needs to reach --target-error training error, ReLU vs tanh, each
    activation at the fastest of the --lrs"""
    _no_resume(cfg)
    lrs = parse_rates(cfg.lrs) if cfg.lrs else [cfg.lr]
    if not 0 < cfg.target_error < 1:
        raise UserError(f"--target-error must be in (0, 1), got {cfg.target_error}")
    x, y = data.load("cifar10", cfg.data_dir)["train"]
    if cfg.train_subset:
        x, y = x[:cfg.train_subset], y[:cfg.train_subset]
    if len(x) < cfg.batch_size:
        raise UserError(f"--train-subset {len(x)} is smaller than one batch ({cfg.batch_size})")
    x, y = x.to(rt.device), y.to(rt.device)
    train = data.TensorLoader(x, y, batch_size=cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.net == "layers-18pct":  # cuda-convnet's protocol, end to end
        if cfg.init != "paper":
            raise UserError("--net layers-18pct starts from its config file's initW (--init is the four-layer net's)")
        mean_image = x.float().mean(0)  # (3, 32, 32): its CIFAR provider subtracts it from raw 0-255 pixels
        build, groups, train_eval, n_eval = Layers18pct, groups_18pct, None, None

        def prepare(b):  # no augmentation, no regularisation (Figure 1)
            return (b.float() - mean_image).contiguous(memory_format=layout)
    else:
        build = groups = None
        n_eval = min(cfg.eval_subset or len(x), len(x))
        train_eval = data.TensorLoader(x[:n_eval], y[:n_eval], batch_size=1000)

        def prepare(b):  # no augmentation and no regularisation: Figure 1 measures raw optimisation speed
            return normalize(b, MEAN, STD).contiguous(memory_format=layout)

    run = open_run(cfg, rt, MILESTONE, "fig1-layers-18pct" if build else "fig1-4layer-cnn", argv)
    arms, curves, card = race(cfg, rt, run, lrs, train, train_eval, prepare, build, groups)
    results = {}
    for act in ACTS:  # each activation judged at its own fastest rate (ties: the lower error that epoch)
        mine = {lr: c for (a, lr), c in zip(arms, curves) if a == act}
        reached = [(len(c), c[-1], lr) for lr, c in mine.items() if c and c[-1] <= cfg.target_error]
        trained = [lr for lr, c in mine.items() if c]  # a rate that blew up in its first epoch has no curve
        lowest = min(trained, key=lambda lr: mine[lr][-1]) if trained else lrs[0]
        epochs, _, best = min(reached) if reached else (None, None, lowest)
        results[act] = dict(epochs=epochs, crossing=crossing(mine[best], cfg.target_error), lr=best,
                            curve=[round(v, 4) for v in mine[best]],
                            rates={f"{lr:g}": [round(v, 4) for v in c] for lr, c in mine.items()})
    r, t = results["relu"], results["tanh"]
    ran = max(len(c) for c in curves)
    ratio = (t["crossing"] or ran) / r["crossing"] if r["crossing"] else None
    epoch_ratio = (t["epochs"] or ran) / r["epochs"] if r["epochs"] else None
    if rt.is_main:
        for act, v in results.items():
            reached = f"reached {cfg.target_error:.0%} in {v['epochs']} epochs" if v["epochs"] else \
                f"did not reach {cfg.target_error:.0%} within {ran} epochs"
            print(f"{act}: {reached} at its fastest rate, lr {v['lr']:g}; per rate, training error per epoch:")
            for lr, c in v["rates"].items():
                print(f"  lr {lr}: " + " ".join(f"{e:.3f}" for e in c))
        plot = figure_1(results, cfg.target_error, run.dir / "relu_vs_tanh.png", NETS[cfg.net], cfg.preset, cfg.seed)
        bound = "" if t["epochs"] else " (tanh never got there: a lower bound)"
        print(f"epochs to {cfg.target_error:.0%} training error: relu {r['epochs']} (lr {r['lr']:g}), "
              f"tanh {t['epochs']} (lr {t['lr']:g}); crossings (interpolated): relu {r['crossing']}, tanh "
              f"{t['crossing']}; tanh / relu = {ratio if ratio is None else round(ratio, 2)}{bound}  (paper: about 6)")
        print(f"curves: {plot}\nrun record: {run.dir}")
    return run.summary(
        dataset=f"CIFAR-10 (JPEG-q75 mirror), {len(x)} training images, " + (
            f"error on {n_eval} in eval mode" if n_eval else "running mean error over each epoch's batches"),
        metric=f"epochs_to_{cfg.target_error:.0%}_train_error (tanh / relu)", value=None if ratio is None else
        round(ratio, 3), paper_value=6.0, epoch_ratio=epoch_ratio,
        paper_source="Krizhevsky et al. 2012, Figure 1: ReLU reaches 25% training error six times faster than tanh",
        params=count_params((build or FourLayerCNN)()), net=cfg.net, train_seconds=round(card["train_seconds"], 2),
        examples_per_second=card["examples_per_second"], nets=len(arms), lrs=lrs, init=cfg.init,
        epochs=cfg.epochs, epochs_run=ran, max_minutes=cfg.max_minutes, relu=results["relu"], tanh=results["tanh"],
        tanh_reached=t["epochs"] is not None,
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
    for arm, c in cards.items():
        if "train_set_error" in c:  # --train-eval: how far the test error is above the training error
            rows[arm].update(train_error=c["train_set_error"], gap=round(c["value"] - c["train_set_error"], 4))
    for arm, row in rows.items():
        run.log(0, "test", arm=arm, **{k: v for k, v in row.items() if k != "paper"})
    if rt.is_main:
        print(f"\n{name} on CIFAR-10 (JPEG-q75 mirror), {cfg.preset} preset:")
        for arm, row in rows.items():
            gap = f"  train error {row['train_error']:.2%}, gap {row['gap']:+.2%}" if "gap" in row else ""
            print(f"  {arm:<24} test error {row['test_error']:.2%} ({row['delta_vs_first']:+.2%}){gap}  "
                  f"{row['params']:>10,} params   paper: {row['paper'] or '-'}")
        print(f"run record: {run.dir}")
    first = next(iter(cards.values()))
    return run.summary(
        dataset="CIFAR-10 (JPEG-q75 mirror)", metric="test_error (full design)", value=ref, paper_value=None,
        paper_source="Krizhevsky et al. 2012, Sections 3.3, 3.4, 3.2, 4.2", params=first["params"],
        train_seconds=round(sum(c["train_seconds"] for c in cards.values()), 2),
        examples_per_second=first["examples_per_second"], epochs=first["epochs"], steps=first["steps"], arms=rows,
    )


ABLATIONS = {  # --arms name: (the table's name, the change)
    "full": ("full design", {}), "no-lrn": ("no LRN", dict(lrn=False)),
    "no-dropout": ("no dropout", dict(dropout=0.0)), "no-overlap": ("no overlapping pooling", dict(overlap=False)),
}


def ablations(cfg, rt, argv=None) -> dict:
    """the CIFAR-10 variant in full and without LRN, without dropout, without overlapping pooling (a run each)"""
    chosen = parse_list(cfg.arms, "arms", str, allowed=tuple(ABLATIONS)) if cfg.arms else list(ABLATIONS)
    arms = dict(ABLATIONS[a] for a in ABLATIONS if a in chosen)  # always in the table's order, full first
    return _compare(cfg, rt, argv, arms, "ablations")


def groups(cfg, rt, argv=None) -> dict:
    """the two-GPU split (grouped conv2/4/5) against one GPU with the same maps and with half the maps"""
    maps = [max(2, 2 * round(c * cfg.width / 2)) for c in CIFAR.channels]
    half = [max(1, c // 2) for c in maps[:4]] + [maps[4]]  # the paper kept conv5 (and the fc layers) full size
    arms = {"two GPUs (grouped)": dict(groups=2), "one GPU, same maps": dict(groups=1),
            "one GPU, half the maps": dict(groups=1, channels=",".join(map(str, half)))}
    return _compare(cfg, rt, argv, arms, "groups")
