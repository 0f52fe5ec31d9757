"""The experiment that made the paper (its Figure 6): plain nets get *worse* as they get deeper, on the
training set itself, while residual nets of the same depth do not.

    python -m milestones train 04_resnet --experiment degradation --preset quick

Trains each model of --models with the same recipe, one after the other, into one run directory:
    metrics.jsonl          training error (running, over the augmented minibatches) and test error, per model
    training_error.png     the paper's Figure 6: plain | residual panels, thin training error, bold test error
    summary.json           final training and test error of every model, and the verdict
    checkpoint-<model>.pt  each trained net
"""

import time
from dataclasses import asdict

from common.device import seed_everything
from common.errors import UserError
from common.session import open_run

from .figure6 import draw, read_curves, title
from .recipe import DATASET, MILESTONE, check_recipe, fit, load_data, make_model


def tail_mean(curve, fraction: float = 0.2) -> float:
    """Training error averaged over the last `fraction` of the logged points (less noisy than the last one)."""
    k = max(1, round(len(curve) * fraction))
    return sum(e for _, e in curve[-k:]) / k


def depth_gaps(results: dict) -> dict:
    """{"plain": (shallow, deep, train error deep - shallow), "resnet": ...} for the shallowest and deepest
    net of each kind trained. A positive plain gap is the degradation problem."""
    gaps = {}
    for kind in ("plain", "resnet"):
        nets = sorted((int(m[len(kind):]), m) for m in results if m.startswith(kind))
        if len(nets) >= 2:
            shallow, deep = nets[0][1], nets[-1][1]
            gaps[kind] = (shallow, deep, results[deep]["train_error"] - results[shallow]["train_error"])
    return gaps


def verdict(results: dict) -> str:
    """What the numbers show, in the paper's terms."""
    lines = []
    for kind, (shallow, deep, gap) in depth_gaps(results).items():
        e0, e1 = results[shallow]["train_error"], results[deep]["train_error"]
        lines.append(f"{deep} training error {e1:.1%} is {'higher' if gap > 0 else 'not higher'} than "
                     f"{shallow}'s {e0:.1%}")
    return "; ".join(lines)


def run_degradation(cfg, rt, argv) -> dict:
    """plain vs residual nets of --models in one run: training error by depth (the paper's Figure 6)"""
    if cfg.resume:
        raise UserError("the degradation experiment does not resume; it restarts from scratch (each trained net "
                        "is kept as checkpoint-<model>.pt in its run directory)")
    names = [m.strip() for m in cfg.models.split(",") if m.strip()]
    if len(names) < 2:
        raise UserError(f"--models needs at least two models to compare, got {cfg.models!r}")
    for name in names:  # bad names fail before any training
        make_model(name, cfg)
    check_recipe(cfg)
    cpu_start = time.process_time()  # CPU seconds of this process, all threads: the budget on a shared machine
    train, test = load_data(cfg, rt)
    run = open_run(cfg, rt, MILESTONE, "degradation", argv)
    results, cards = {}, {}
    for name in names:
        seed_everything(cfg.seed)  # a net's init and augmentation depend on --seed alone, not on the nets before it
        sess, curve = fit(cfg, rt, name, train, test, run, one_of_several=True)
        sess.finish()  # checkpoint-<name>.pt
        cards[name] = sess.card()
        results[name] = dict(train_error=tail_mean(curve), test_error=sess.results["test_error"], curve=curve)
        run.log(sess.step_count, "final", epoch=round(sess.epoch, 4), model=name,
                train_error=results[name]["train_error"], test_error=results[name]["test_error"])
    plot = None
    if rt.is_main:
        plot = draw(read_curves(run.dir / "metrics.jsonl"), run.dir / "training_error.png",
                    title=title(asdict(cfg), sess.epoch))
    said, gaps = verdict(results), depth_gaps(results)
    plain_gap = gaps.get("plain", (None, None, None))[2]
    params = {n: c["params"] for n, c in cards.items()}
    rates = {n: c["examples_per_second"] for n, c in cards.items()}
    card = run.summary(
        model="degradation:" + ",".join(names), dataset=DATASET,
        metric="training error, deepest minus shallowest plain net (> 0: degradation)",
        value=None if plain_gap is None else round(plain_gap, 4), paper_value=None,
        paper_source="He et al. 2015, Figure 6: plain-56 trains worse than plain-20; ResNet-56 better than ResNet-20",
        params=max(params.values()), train_seconds=round(sum(c["train_seconds"] for c in cards.values()), 2),
        examples_per_second=round(sum(rates.values()) / len(rates), 1), steps=sess.step_count,
        cpu_seconds=round(time.process_time() - cpu_start, 1), width=cfg.width,
        epochs=round(sess.epoch, 3), train_error={n: round(v["train_error"], 4) for n, v in results.items()},
        test_error={n: v["test_error"] for n, v in results.items()}, params_per_model=params,
        examples_per_second_per_model=rates,
        residual_gap=round(gaps["resnet"][2], 4) if "resnet" in gaps else None, verdict=said,
        plot=str(plot) if plot else None,
    )
    if rt.is_main:
        print(f"\n{'model':<10} {'params':>9} {'train err':>10} {'test err':>9}")
        for n, v in results.items():
            print(f"{n:<10} {params[n]:>9,} {v['train_error']:>10.2%} {v['test_error']:>9.2%}")
        print(f"{said}\nplot: {plot}\nrun record: {run.dir}")
    return card
