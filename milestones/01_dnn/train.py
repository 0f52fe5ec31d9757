"""Train the 1986 backpropagation network.

    python -m milestones train 01_dnn                          # the paper's 6-2-1 symmetry net, several seeds
    python -m milestones train 01_dnn --experiment xor
    python -m milestones train 01_dnn --experiment mnist --preset quick
    python -m milestones train 01_dnn --experiment mnist --preset paper     # the 1986 rule on MNIST, case by case
"""

import itertools
import math
import statistics
import time
from dataclasses import dataclass, replace

import torch

from common import data
from common.config import TrainConfig, arg, parse_rates, parse_sizes, train_command
from common.device import mfu, seed_everything
from common.errors import UserError
from common.logging import progress
from common.loop import evaluate_classifier, optimizer_step
from common.session import Diverged, Session, open_run

from .model import LOSSES, MLP

MILESTONE = "01_dnn"
DIGITS = ("mnist", "mnist_1986_vs_modern")


@dataclass
class Config(TrainConfig):
    experiment: str = arg("symmetry", "what to run (the list below)")
    hidden: str = arg("2", "hidden layer sizes, comma-separated (e.g. 800 or 500,300)")
    activation: str = arg("sigmoid", "hidden unit: sigmoid (the paper), tanh, relu", choices=("sigmoid", "tanh", "relu"))
    loss: str = arg("mse", "mse: the paper's 1/2 sum (y-d)^2 on logistic outputs; ce: softmax cross-entropy",
                    choices=("mse", "ce"))
    momentum: float = arg(0.9, "alpha in the paper's eq. 9")
    weight_decay: float = arg(0.0, "L2 penalty", only=DIGITS)
    init_range: float = arg(0.3, "weights and biases uniform in [-r, r] as in the paper; 0 = modern init")
    seeds: int = arg(10, "independent nets trained, seeds seed..seed+N-1", only=("symmetry", "xor"))
    dataset: str = arg("mnist", "mnist or fashion_mnist", choices=("mnist", "fashion_mnist"), only=DIGITS)
    schedule: str = arg("cosine", "learning-rate schedule over the run", choices=("cosine", "constant"), only=DIGITS)
    ckpt_every: int = arg(500, "save checkpoint.pt every N steps (and at the end, with the results)")
    val_size: int = arg(0, "hold out the last N training images as a validation set, scored beside the test set "
                           "(0 = train on all 60,000)", only=DIGITS)
    lrs: str = arg("", "learning rates each arm tries, comma-separated; each arm is judged at the rate with its "
                       "lowest validation error (empty = --lr, x0.2 for the 1986 arms)", only="mnist_1986_vs_modern")


PRESETS = {
    # symmetry: the paper's 6-2-1 net, full batch over all 64 patterns, eps 0.1, alpha 0.9, init +-0.3
    "symmetry/paper": dict(epochs=20000, lr=0.1, seeds=10),
    "symmetry/default": dict(epochs=20000, lr=0.1, seeds=10),
    "symmetry/quick": dict(epochs=20000, lr=0.1, seeds=10),
    "symmetry/smoke": dict(epochs=300, lr=0.1, seeds=2),
    "xor/paper": dict(epochs=20000, lr=0.5, seeds=10),
    "xor/default": dict(epochs=20000, lr=0.5, seeds=10),
    "xor/quick": dict(epochs=20000, lr=0.5, seeds=10),
    "xor/smoke": dict(epochs=300, lr=0.5, seeds=2),
    # mnist/paper: the 1986 rule itself on the 784-800-10 net of Simard et al. 2003: logistic units, squared
    # error, weights and biases uniform in +-0.3, eps 0.1 and alpha 0.9 (the symmetry run's values), constant
    # eps, no weight decay, the weights changed after every case (the paper's alternative to one change per
    # sweep). The paper has no digits task: the epoch count is ours. What happens when it runs: NOTES.md.
    "mnist/paper": dict(hidden="800", activation="sigmoid", loss="mse", init_range=0.3, epochs=20, batch_size=1,
                        lr=0.1, momentum=0.9, weight_decay=0.0, schedule="constant", log_every=1000,
                        eval_every=20000, ckpt_every=20000),
    # mnist/modern and the rest: the same net with ReLU, cross-entropy, He init, momentum SGD, cosine decay
    # (Simard et al. do not publish their schedule; this one is ours)
    "mnist/modern": dict(hidden="800", activation="relu", loss="ce", init_range=0.0, epochs=60, batch_size=32,
                         lr=0.02, weight_decay=0.0),
    "mnist/default": dict(hidden="800", activation="relu", loss="ce", init_range=0.0, epochs=30, batch_size=128,
                          lr=0.05, weight_decay=1e-4),
    # bf16 where native (auto): the same error as fp32, faster on a CPU with native bf16
    "mnist/quick": dict(hidden="800", activation="relu", loss="ce", init_range=0.0, epochs=12, batch_size=128,
                        lr=0.05, weight_decay=1e-4, precision="auto"),
    "mnist/smoke": dict(hidden="32", activation="relu", loss="ce", init_range=0.0, epochs=1, steps=20,
                        batch_size=64, lr=0.05, ckpt_every=10),
}
# the comparison trains the mnist recipe once per arm and rate: one sweep for all arms (issue 13), every rate a
# factor of ~3 from the next, 5,000 training images held out to choose each arm's rate (never the test set)
_SWEEP = dict(lrs="0.0003,0.001,0.003,0.01,0.03,0.1,0.3,1", val_size=5000)
for _p in ("modern", "default", "quick"):
    PRESETS[f"mnist_1986_vs_modern/{_p}"] = dict(PRESETS[f"mnist/{_p}"], **_SWEEP)
PRESETS["mnist_1986_vs_modern/smoke"] = dict(PRESETS["mnist/smoke"], lrs="0.01,0.1", val_size=500)
# no "mnist_1986_vs_modern/paper": the comparison is ours, no paper ran it (run_eras refuses --preset paper)

# What differs between the arms of the comparison; everything else (layers, optimizer, batch, epochs, schedule,
# the rates swept) is shared. The 1986 arm starts from the paper's init (uniform in +-0.3, chosen for nets of a
# few inputs), 1986_fanin from PyTorch's default, uniform in +-1/sqrt(fan-in) (the scaling LeCun et al. 1998
# prescribe for their squared-error nets), the modern arm from He et al.'s. Without --lrs the logistic
# + squared-error nets get a 5x smaller rate: at the modern rate they drive every output unit into saturation
# within a few steps and stop learning (the "flat spot" of y(1-y) in eq. 5; NOTES.md).
ERAS = {"1986": dict(activation="sigmoid", loss="mse", init_range=0.3, lr_factor=0.2),
        "1986_fanin": dict(activation="sigmoid", loss="mse", init_range=0.0, lr_factor=0.2),
        "modern": dict(activation="relu", loss="ce", init_range=0.0, lr_factor=1.0)}


# ---------------------------------------------------------------------------------------------------------
# The paper's own tasks: every input pattern, generated in code
# ---------------------------------------------------------------------------------------------------------

def symmetry_patterns() -> tuple[torch.Tensor, torch.Tensor]:
    """All 64 binary vectors of length 6; target 1 when the vector is a mirror image of itself about its centre."""
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)))  # (64, 6)
    d = (x == x.flip(1)).all(1).float().unsqueeze(1)  # (64, 1): 8 symmetric patterns
    return x, d


def xor_patterns() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return x, (x[:, :1] != x[:, 1:]).float()


def check_every(device: torch.device) -> int:
    """Sweeps between host reads of the solved flag: every sweep on a CPU (a read costs nothing there), every 100
    on a GPU, where each read waits for the device and a 6-2-1 sweep is shorter than the wait."""
    return 1 if device.type == "cpu" else 100


def sweeps_to_solve(cfg: Config, x, d, sizes, seed: int) -> int | None:
    """Full-batch training (the weights change once per sweep through all patterns) until every pattern's
    output is on the right side of 0.5. Returns the sweeps taken, or None if not solved within cfg.epochs.
    The first solved sweep is kept on the device and read every check_every() sweeps, so the count is exact
    wherever it is read."""
    torch.manual_seed(seed)
    model = MLP(sizes, cfg.activation, init_range=cfg.init_range or None).to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)  # dw = -eps dE/dw + alpha dw_prev
    loss_fn = LOSSES[cfg.loss]
    every = check_every(x.device)
    solved_at = torch.zeros((), dtype=torch.long, device=x.device)  # 0 until the first solved sweep
    for sweep in range(1, cfg.epochs + 1):
        logits = model(x)
        loss = loss_fn(logits, d, reduction="sum")  # E summed over all cases, as in the paper
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            solved = ((model(x) > 0).float() == d).all()  # logistic output > 0.5  <=>  total input > 0
            solved_at = torch.where((solved_at == 0) & solved, sweep, solved_at)
        if sweep % every == 0 or sweep == cfg.epochs:
            if solved_at.item():
                return int(solved_at)
    return None


def run_patterns(cfg: Config, rt, argv) -> dict:
    """the paper's own tasks, generated (symmetry: 6-2-1 net; xor: 2-2-1), trained from several seeds"""
    if cfg.resume:
        raise UserError(f"--resume is for the mnist experiment; {cfg.experiment} trains in seconds from scratch")
    if cfg.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {cfg.seeds}")
    x, d = symmetry_patterns() if cfg.experiment == "symmetry" else xor_patterns()
    sizes = [x.shape[1], *parse_sizes(cfg.hidden, "--hidden"), 1]
    name = "mlp-" + "-".join(map(str, sizes))
    logger = open_run(cfg, rt, MILESTONE, f"{cfg.experiment}-{name}", argv)
    x, d = x.to(rt.device), d.to(rt.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64x6 batch: thread hand-offs would cost more than the arithmetic
    t0 = time.time()
    results = []
    for seed in progress(range(cfg.seed, cfg.seed + cfg.seeds), desc=f"{cfg.experiment} seeds", rt=rt, unit="net"):
        sweeps = sweeps_to_solve(cfg, x, d, sizes, seed)
        results.append(sweeps)
        logger.log(step=sweeps or cfg.epochs, split="train", seed=seed, solved=sweeps is not None, sweeps=sweeps)
    seconds = time.time() - t0
    torch.set_num_threads(threads)
    solved = [s for s in results if s is not None]
    median = statistics.median(solved) if solved else None
    paper = 1425 if cfg.experiment == "symmetry" and sizes == [6, 2, 1] else None
    card = logger.summary(  # precision: these tiny nets always train in fp32, whatever --precision says
        model=name, dataset=f"{cfg.experiment} ({len(x)} patterns, generated)",
        metric="sweeps_to_solve (median)", value=median, paper_value=paper,
        paper_source="Rumelhart, Hinton & Williams 1986, symmetry: 1,425 sweeps" if paper else None,
        params=sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])), train_seconds=round(seconds, 2),
        examples_per_second=round(sum(s or cfg.epochs for s in results) * len(x) / seconds, 1),
        precision="fp32", epochs=cfg.epochs, solved=f"{len(solved)}/{len(results)}", sweeps_per_seed=results,
        sweeps_min=min(solved) if solved else None, sweeps_max=max(solved) if solved else None,
    )
    if rt.is_main:
        shown = ", ".join("-" if s is None else str(s) for s in results)
        print(f"{cfg.experiment} {name}: solved {len(solved)}/{len(results)} seeds within {cfg.epochs} sweeps; "
              f"sweeps per seed: {shown}")
        spread = f"min {min(solved)}, median {median}, max {max(solved)}" if solved else "none solved"
        print(f"sweeps to solve over the solved seeds: {spread}" + (f"   (paper: {paper:,}, one run)" if paper else ""))
        print(f"run record: {logger.dir}")
    return card


# ---------------------------------------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------------------------------------

def run_mnist(cfg: Config, rt, argv) -> dict:
    """784-800-10 MLP on real digits (Simard et al. 2003's 1.6%); --activation sigmoid --loss mse is 1986's recipe"""
    splits = data.load(cfg.dataset, cfg.data_dir)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    val = None
    if cfg.val_size:  # held out from the end of the training set: choosing a rate must not look at the test set
        if not 0 < cfg.val_size < len(x_train) - cfg.batch_size:
            raise UserError(f"--val-size must be between 1 and {len(x_train) - cfg.batch_size - 1}, "
                            f"got {cfg.val_size}")
        x_train, y_train, (x_val, y_val) = (x_train[:-cfg.val_size], y_train[:-cfg.val_size],
                                            (x_train[-cfg.val_size:], y_train[-cfg.val_size:]))
        val = data.TensorLoader(x_val, y_val, batch_size=1000, device=rt.device, rank=rt.rank,
                                world_size=rt.world_size)
    train = data.TensorLoader(x_train, y_train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                              device=rt.device, seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    test = data.TensorLoader(x_test, y_test, batch_size=1000, device=rt.device, rank=rt.rank,
                             world_size=rt.world_size)

    def prepare(x):  # uint8 (B, 1, 28, 28) -> float in [0, 1] on the device
        return x.to(rt.device, non_blocking=True).float().div_(255)

    sizes = [784, *parse_sizes(cfg.hidden, "--hidden"), 10]
    seed_everything(cfg.seed)  # each run of a sweep starts from the same draw, whatever ran before it
    model = MLP(sizes, cfg.activation, init_range=cfg.init_range or None).to(rt.device)
    name = f"mlp-{'-'.join(map(str, sizes))}-{cfg.activation}-{cfg.loss}"
    total = cfg.steps or cfg.epochs * len(train)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.schedule, total))
    scaler = rt.grad_scaler()
    sess = Session(cfg, rt, open_run(cfg, rt, MILESTONE, name, argv), total, len(train))
    sess.attach(model, opt, sched, scaler)
    net = rt.wrap(model, compile=cfg.compile)
    loss_fn = LOSSES[cfg.loss]  # the paper sums over cases; minibatches use the mean so the step size is batch-free
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for x, y in train.batches(epoch, start):
                with rt.autocast():
                    logits = net(prepare(x))
                loss = loss_fn(logits, y.to(rt.device, non_blocking=True), reduction="mean")
                optimizer_step(loss, opt, scaler)
                sched.step()
                sess.step(cfg.batch_size)  # the global batch: ranks step in lockstep
                if sess.due("log"):
                    sess.log("train", loss=loss, lr=sched.get_last_lr()[0])
                if sess.due("eval"):
                    if val is not None:
                        sess.log("val", **evaluate_classifier(net, val, rt, prepare))
                    sess.log("test", **evaluate_classifier(net, test, rt, prepare))
                if not sess.running:
                    break
    test_err = sess.results["test_error"]
    paper = 0.016 if cfg.dataset == "mnist" and sizes == [784, 800, 10] and cfg.loss == "ce" else None
    card = sess.summary(
        dataset=cfg.dataset, metric="test_error", value=test_err, paper_value=paper,
        paper_source="Simard, Steinkraus & Platt 2003 (2-layer MLP, 800 HU, CE)" if paper else None,
        mfu=mfu(6 * sum(l.weight.numel() for l in model.layers), sess.rate, rt),
        **({"val_error": sess.results["val_error"], "val_size": cfg.val_size} if val is not None else {}),
    )
    if rt.is_main:
        print(f"{name}: test error {test_err:.2%}" + (f" (paper: {paper:.1%})" if paper else "") +
              f"; {card['train_seconds']:.0f} s, {sess.rate:,.0f} examples/s; run record: {sess.run.dir}")
    return card


def run_eras(cfg: Config, rt, argv) -> dict:
    """the mnist MLP per arm and rate: 1986's sigmoid + squared error (the paper's init, and a fan-in init) vs
    ReLU + cross-entropy, each arm at its best rate of one sweep (a run record per arm and rate)"""
    if cfg.resume:
        raise UserError("--resume one arm at a time: --experiment mnist --resume RUN_DIR")
    if cfg.preset == "paper":
        raise UserError("the 1986-vs-modern comparison is ours, not a paper's: use --preset modern, default or "
                        "quick (the 1986 recipe alone is --experiment mnist --preset paper)")
    rates = parse_rates(cfg.lrs) if cfg.lrs else None
    if rates and not cfg.val_size:
        raise UserError(f"--lrs needs --val-size > 0 (each arm's rate is chosen on the validation set), got "
                        f"--val-size {cfg.val_size}")
    judge = "val_error" if rates else "value"  # a sweep chooses on the held-out images, never on the test set
    cards = {}
    for era, arm in ERAS.items():
        tried, lrs = [], rates or [cfg.lr * arm["lr_factor"]]
        for lr in lrs:
            arm_cfg = replace(cfg, experiment="mnist", activation=arm["activation"], loss=arm["loss"],
                              init_range=arm["init_range"], lr=lr)
            try:
                card = run_mnist(arm_cfg, rt, argv)
            except Diverged as e:  # a rate that blows up is one point of the sweep, not the end of it
                if rt.is_main:
                    print(f"{era} at lr {lr:g}: {e}")
                card = dict(value=None, val_error=None, lr=lr, diverged=True)
            tried.append(dict(card, lr=lr))
        scored = [c for c in tried if c.get(judge) is not None]
        if not scored:
            raise UserError(f"every rate of the {era} arm diverged ({', '.join(f'{r:g}' for r in lrs)}): "
                            "try smaller ones")
        best = min(scored, key=lambda c: c[judge])
        cards[era] = dict(best, sweep=[dict(lr=c["lr"], val_error=c.get("val_error"), test_error=c["value"])
                                       for c in tried])
    if rt.is_main:
        for era, card in cards.items():
            if rates:
                curve = ", ".join(f"{s['lr']:g}: " + ("diverged" if s["val_error"] is None else f"{s['val_error']:.2%}")
                                  for s in card["sweep"])
                print(f"{era:>10}: validation error per rate   {curve}")
            print(f"{era:>10}: {card['model']:<32} lr {card['lr']:g}, test error {card['value']:.2%}, "
                  f"{card['train_seconds']:.0f} s")
    return cards


def _schedule(kind: str, total: int):
    if kind == "constant":
        return lambda s: 1.0
    return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))


EXPERIMENTS = {"symmetry": run_patterns, "xor": run_patterns, "mnist": run_mnist, "mnist_1986_vs_modern": run_eras}


def main(argv=None, prog="python -m milestones train 01_dnn"):
    return train_command(Config, PRESETS, EXPERIMENTS, argv, prog, __doc__, MILESTONE, preset_help={
        "modern": "The 784-800-10 net with ReLU, cross-entropy, He init and momentum SGD, 60 epochs of batch 32."})


if __name__ == "__main__":
    main()
