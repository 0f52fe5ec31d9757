"""DDPM's training (Ho, Jain & Abbeel 2020, Algorithm 1): L_simple (eq. 14) at a uniformly drawn t, Adam with
warm-up, gradient clipping, and an exponential moving average of the weights to sample from (Algorithm 2).
"""

import copy

import torch

from common import data
from common.data.augment import random_hflip
from common.loop import optimizer_step

from .diffusion import EMA
from .model import build, diffusion_of
from .recipe import GRID, draw, load_images, make_optimizer, samples_dir, save_grid, score, seeded, session


def warmup(step: int, steps: int) -> float:
    """The learning rate's factor at `step` (0-based): rising linearly to 1 over the first `steps` updates, then 1
    (the release's schedule, 5,000 steps for CIFAR-10)."""
    return min((step + 1) / max(steps, 1), 1.0)


def train_ddpm(cfg, rt, run, clf, arm=None):
    """Algorithm 1: L_simple (eq. 14) at a uniformly drawn t, Adam with warm-up, clipping, and a weight average."""
    nets = build(cfg).to(rt.device)
    model = nets["unet"]
    x_train, x_test = load_images(cfg)
    x_test = x_test[:cfg.test_size]
    diffusion = diffusion_of(cfg)
    ema = EMA(model, cfg.ema_decay)
    ema_net = copy.deepcopy(model).eval().requires_grad_(False)  # the averaged weights, for sampling
    train = data.TensorLoader(x_train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, device=rt.device,
                              seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    total = cfg.steps or cfg.epochs * len(train)
    opt = make_optimizer(cfg, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup(s, cfg.warmup_steps))
    scaler = rt.grad_scaler()
    sess = session(cfg, rt, run, total, len(train), arm)
    state = sess.attach(nets, opt, sched, scaler, extra=lambda: dict(ema=ema.state_dict()), resume=arm is None)
    if "ema" in state:
        ema.load_state_dict(state["ema"])
    net = rt.wrap(model, compile=cfg.compile)
    flip = cfg.dataset == "cifar10"  # the paper's random horizontal flips, for CIFAR-10 only
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for (x,) in train.batches(epoch, start):
                x0 = x.to(rt.device, non_blocking=True).float() / 127.5 - 1  # [-1, 1], (B, C, H, W)
                if flip:
                    x0 = random_hflip(x0)
                with rt.autocast():
                    loss = diffusion.loss(net, x0)  # || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2
                optimizer_step(loss, opt, scaler, clip=cfg.clip, params=model.parameters())
                sched.step()
                ema.update()
                sess.step(cfg.batch_size)
                if sess.due("log"):
                    sess.log("train", loss=loss, lr=sched.get_last_lr()[0])
                if sess.due("eval") and rt.is_main:
                    ema.copy_to(ema_net)
                    sess.log("test", loss=ddpm_test_loss(cfg, rt, diffusion, ema_net, x_test))
                    with seeded(cfg.seed, rt.device):
                        grid = draw(cfg, nets, GRID, rt.device, diffusion, ema_net, rt)
                    save_grid(grid, samples_dir(run, arm) / f"step_{sess.step_count}.png")
                if not sess.running:
                    break
    ema.copy_to(ema_net)
    card = dict(dataset=cfg.dataset, metric="classifier_fid", paper_value=None, test_loss=sess.results.get("test_loss"),
                timesteps=cfg.timesteps,
                paper_source="no published number on this yardstick (the paper: Inception FID 3.17 on CIFAR-10, "
                             "not comparable)")
    card.update(score(cfg, rt, clf, lambda n: draw(cfg, nets, n, rt.device, diffusion, ema_net, rt), sess))
    card["value"] = card.get("fcd")
    return sess, card


@torch.no_grad()
def ddpm_test_loss(cfg, rt, diffusion, net, x_test) -> float:
    """L_simple of the averaged weights on the test images, at fixed draws of t and eps."""
    total = 0.0
    with seeded(cfg.seed, rt.device):
        for i in range(0, len(x_test), 250):
            x0 = x_test[i:i + 250].to(rt.device).float() / 127.5 - 1
            with rt.autocast():
                total += float(diffusion.loss(net, x0)) * len(x0)
    return total / len(x_test)
