"""The VAE's training (Kingma & Welling 2013): minimise -ELBO (eq. 10, L = 1) on freshly binarised batches, then
measure the test ELBO and the importance-sampled log-likelihood (Burda et al. 2015's L_k); with a 2-D latent, also
the learned manifold (the paper's Figure 4).
"""

import math

import torch

from common import data
from common.logging import progress
from common.loop import optimizer_step

from .model import build
from .recipe import GRID, draw, load_images, make_optimizer, samples_dir, save_grid, score, seeded, session
from .vae import binarize, elbo, importance_log_likelihood, manifold_grid


def iwae_lr(epoch: int) -> float:
    """Burda et al.'s schedule: 3^i epochs at 10^(-i/7) times the initial rate, i = 0..7 (3,280 epochs)."""
    i, end = 0, 1
    while epoch >= end and i < 7:
        i += 1
        end += 3 ** i
    return 10 ** (-i / 7)


@torch.no_grad()
def test_bound(model, x_test, rt, cfg, k: int = 0) -> float:
    """Mean ELBO (k = 0) or k-sample estimate of log p(x) (Burda et al.'s L_k) over the test images, in nats.
    The test set is binarised once with a fixed seed, so every evaluation and both bounds see the same digits."""
    was = model.training
    model.eval()
    total, batch = 0.0, 100 if k else 1000
    with seeded(cfg.seed, rt.device):
        x_all = binarize(x_test) if cfg.binarize else x_test.float() / 255  # (N, 1, 28, 28) on the CPU
        steps = range(0, len(x_all), batch)
        for i in progress(steps, desc=f"log p(x), k={k}", rt=rt, unit="batch") if k else steps:
            x = x_all[i:i + batch].to(rt.device)
            total += float((importance_log_likelihood(model, x, k) if k else elbo(model, x)).sum())
    model.train(was)
    return total / len(x_test)


def train_vae(cfg, rt, run, clf, arm=None):
    """Minimise -ELBO (eq. 10, L = 1) on freshly binarised batches; returns (session, card fields)."""
    nets = build(cfg).to(rt.device)
    model = nets["vae"]
    x_train, x_test = load_images(cfg)
    x_test = x_test[:cfg.test_size]
    train = data.TensorLoader(x_train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, device=rt.device,
                              seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    total = cfg.steps or cfg.epochs * len(train)
    opt = make_optimizer(cfg, model.parameters())
    per_epoch = len(train)
    lam = {"constant": lambda s: 1.0, "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)),
           "iwae": lambda s: iwae_lr(s // per_epoch)}[cfg.schedule]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    scaler = rt.grad_scaler()
    sess = session(cfg, rt, run, total, per_epoch, arm)
    sess.attach(nets, opt, sched, scaler, resume=arm is None)
    net = rt.wrap(model, compile=cfg.compile)
    prepare = binarize if cfg.binarize else (lambda x: x.float() / 255)
    with sess:
        while sess.running:
            epoch, start = sess.position()
            for (x,) in train.batches(epoch, start):
                x = prepare(x.to(rt.device, non_blocking=True))  # a fresh binarisation every time (B, 1, 28, 28)
                with rt.autocast():
                    loss = -elbo(net, x).mean()  # -[E_q log p(x|z) - KL(q(z|x) || p(z))], nats per image
                optimizer_step(loss, opt, scaler)
                sched.step()
                sess.step(cfg.batch_size)
                if sess.due("log"):
                    sess.log("train", loss=loss, lr=sched.get_last_lr()[0])
                if sess.due("eval") and rt.is_main:
                    sess.log("test", elbo=test_bound(model, x_test, rt, cfg))
                    with seeded(cfg.seed, rt.device):
                        grid = draw(cfg, nets, GRID, rt.device)
                    save_grid(grid, samples_dir(run, arm) / f"step_{sess.step_count}.png")
                if not sess.running:
                    break
    elbo_test = sess.results.get("test_elbo")
    card = dict(dataset=cfg.dataset, test_elbo=elbo_test, metric="test_loss (-ELBO)", paper_value=None,
                paper_source=None, value=-elbo_test if elbo_test is not None else None)
    if cfg.iw_samples:
        nll = -test_bound(model, x_test, rt, cfg, k=cfg.iw_samples) if rt.is_main else None
        if rt.is_main:
            sess.log("test", nll=nll, iw_samples=cfg.iw_samples)
        burda = (cfg.dataset == "mnist" and cfg.binarize and model.hidden == (200, 200) and model.z_dim == 50
                 and cfg.activation == "tanh")
        card.update(metric="test_nll", value=nll, iw_samples=cfg.iw_samples, test_images=len(x_test),
                    paper_value=86.76 if burda else None,
                    paper_source="Burda et al. 2015, Table 1: VAE, 784-200-200-50, k=1 training, k=5000 test "
                                 "(stochastically binarised MNIST)" if burda else None)
    if rt.is_main and model.z_dim == 2:
        save_grid(manifold_grid(model, 20), run.dir / "manifold.png", nrow=20)  # the paper's Figure 4
    card.update(score(cfg, rt, clf, lambda n: draw(cfg, nets, n, rt.device), sess))
    return sess, card
