"""The GANs' training, Algorithm 1 of Goodfellow et al. 2014 for the MLP GAN and DCGAN (Radford et al. 2015): k
steps of D ascending V(D, G), then one step of G on the minimax or the non-saturating loss; or the released code's
simultaneous update of both nets.
"""

from pathlib import Path

import torch

from common import data
from common.errors import UserError
from common.loop import optimizer_step

from .gan import discriminator_loss, generator_loss
from .model import build
from .recipe import (GRID, draw, judging, load_images, make_optimizer, samples_dir, save_grid, score, seeded,
                     session)


# What D minimises, as each release writes it: goodfeli/adversarial's AdversaryCost2 halves the sum of the two
# cross-entropies (d_obj = 0.5 * (real + fake)); Newmu/dcgan_code sums them (d_cost = d_cost_real + d_cost_gen).
D_COST_SCALE = {"gan": 0.5, "dcgan": 1.0}


class Both:
    """Two optimizers (or schedulers, or scalers) saved and restored as one: {name: state_dict}."""

    def __init__(self, **parts):
        self.parts = parts

    def state_dict(self) -> dict:
        return {k: v.state_dict() for k, v in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, v in self.parts.items():
            v.load_state_dict(state[k])


def train_gan(cfg, rt, run, clf, arm=None):
    """Algorithm 1: k steps of D ascending V(D, G), then one step of G; one session step = one G step."""
    nets = build(cfg).to(rt.device)
    G, D = nets["G"], nets["D"]
    x_train, x_test = load_images(cfg)
    if cfg.model == "gan":
        G.init_output_bias(x_train.float().mean(0) / 255)  # start G at the pixel marginals, as the release does
    scale = (lambda x: x.float() / 255) if cfg.model == "gan" else (lambda x: x.float() / 127.5 - 1)  # DCGAN: [-1, 1]
    train = data.TensorLoader(x_train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, device=rt.device,
                              seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    k, half = cfg.d_steps, D_COST_SCALE[cfg.model]
    if cfg.gan_update == "simultaneous" and k != 1:
        raise UserError(f"--gan-update simultaneous takes one batch for both nets: --d-steps must be 1, got {k}")
    per_epoch = len(train) // k
    total = cfg.steps or cfg.epochs * per_epoch
    opt_d, opt_g = make_optimizer(cfg, D.parameters()), make_optimizer(cfg, G.parameters())
    decay = (lambda s: sgd_decay(cfg, s)) if cfg.optimizer == "sgd" else (lambda s: 1.0)
    sched_d, sched_g = (torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_d, opt_g))
    scaler_d, scaler_g = rt.grad_scaler(), rt.grad_scaler()
    sess = session(cfg, rt, run, total, per_epoch, arm)
    sess.attach(nets, Both(D=opt_d, G=opt_g), Both(D=sched_d, G=sched_g), Both(D=scaler_d, G=scaler_g),
                resume=arm is None)
    g, d = rt.wrap(G, compile=cfg.compile), rt.wrap(D, compile=cfg.compile)
    b = train.local_batch
    with sess:
        while sess.running:
            epoch, start = sess.position()
            if cfg.optimizer == "sgd":
                for group in opt_d.param_groups + opt_g.param_groups:
                    group["momentum"] = momentum(cfg, epoch)
            batches = train.batches(epoch, start * k)
            for _ in range(start, per_epoch):
                if cfg.gan_update == "simultaneous":  # the release: one batch, one pass, both nets updated at once
                    (x,) = next(batches)
                    x = scale(x.to(rt.device, non_blocking=True))  # (B, C, H, W)
                    with rt.autocast():
                        real, fake = d(x), d(g(G.noise(b)))  # D's logits on the fakes serve both objectives
                    loss_d = discriminator_loss(real, fake)  # -[log D(x) + log(1 - D(G(z)))]
                    loss_g = generator_loss(fake, cfg.g_loss)
                    simultaneous_step((half * loss_d, D, opt_d, scaler_d), (loss_g, G, opt_g, scaler_g))
                for _ in range(k if cfg.gan_update == "alternating" else 0):  # k discriminator steps, each on a fresh minibatch of data and of noise
                    (x,) = next(batches)
                    x = scale(x.to(rt.device, non_blocking=True))  # (B, C, H, W)
                    with rt.autocast():
                        real, fake = d(x), d(g(G.noise(b)).detach())
                    loss_d = discriminator_loss(real, fake)  # -[log D(x) + log(1 - D(G(z)))]
                    optimizer_step(half * loss_d, opt_d, scaler_d)  # the GAN release halves it, DCGAN's sums
                if cfg.gan_update == "alternating":
                    with rt.autocast():
                        fake_g = d(g(G.noise(b)))
                    loss_g = generator_loss(fake_g, cfg.g_loss)  # log(1 - D(G(z))) or -log D(G(z))
                    optimizer_step(loss_g, opt_g, scaler_g)
                sched_d.step()
                sched_g.step()
                sess.step(cfg.batch_size * k)
                if sess.due("log"):
                    sess.log("train", loss=loss_g, d_loss=loss_d, d_real=torch.sigmoid(real.float()).mean(),
                             d_fake=torch.sigmoid(fake.float()).mean(), lr=sched_g.get_last_lr()[0])
                if sess.due("eval") and rt.is_main:
                    sess.log("test", **eval_gan(cfg, rt, nets, scale(x_test[:1000].to(rt.device))))
                    with seeded(cfg.seed, rt.device):
                        grid = draw(cfg, nets, GRID, rt.device)
                    save_grid(grid, samples_dir(run, arm) / f"step_{sess.step_count}.png")
                if not sess.running:
                    break
    if cfg.model == "gan":
        source = ("no published number on this yardstick (the paper: a Parzen-window log-likelihood, 225 nats on "
                  "MNIST, which Theis et al. 2016 show is not a measure of the model)")
    elif cfg.image_dir:
        source = "the paper reports no sample-quality number for its LSUN, faces or ImageNet-1k models"
    else:
        source = "no published number on this yardstick (the paper reports none for MNIST or CIFAR-10)"
    card = dict(dataset=f"images:{Path(cfg.image_dir).name}" if cfg.image_dir else cfg.dataset,
                metric="classifier_fid", paper_value=None, paper_source=source)
    card.update(score(cfg, rt, clf, lambda n: draw(cfg, nets, n, rt.device), sess))
    card["value"] = card.get("fcd")
    return sess, card


def sgd_decay(cfg, step: int) -> float:
    """The learning rate's factor after `step` updates: divided by --lr-decay at every update, down to an lr of
    1e-6 (the GAN release: pylearn2's ExponentialDecay, decay_factor 1.000004, min_lr 1e-6)."""
    return max(cfg.lr_decay ** -step, 1e-6 / cfg.lr)


def momentum(cfg, epoch: int) -> float:
    """SGD's momentum in `epoch` (0-based): --momentum in the first, rising linearly to --final-momentum in the
    250th and after (the GAN release: 0.5 to 0.7, pylearn2's MomentumAdjustor from epoch 1 to 250)."""
    return cfg.momentum + (cfg.final_momentum - cfg.momentum) * min(max(epoch / 249, 0.0), 1.0)


def simultaneous_step(*parts) -> None:
    """One update of several nets, each by the gradient of its own loss w.r.t. its own parameters only, all taken
    at the same (pre-update) parameters: parts are (loss, net, optimizer, scaler)."""
    grads = [torch.autograd.grad(scaler.scale(loss), list(net.parameters()), retain_graph=True)
             for loss, net, _, scaler in parts]  # every gradient before any update: the graph still holds
    for (_, net, opt, scaler), gs in zip(parts, grads):
        for p, g in zip(net.parameters(), gs):
            p.grad = g
        scaler.step(opt)
        scaler.update()


@torch.no_grad()
def eval_gan(cfg, rt, nets, x_test) -> dict:
    """D's mean output on real test images and on fresh samples: how sure D is, and whether it still tells them
    apart."""
    with judging(cfg, nets["G"]) as G, judging(cfg, nets["D"]) as D, seeded(cfg.seed + 2, rt.device):
        fake = G(G.noise(len(x_test), rt.device))
        return dict(d_real=float(torch.sigmoid(D(x_test).float()).mean()),
                    d_fake=float(torch.sigmoid(D(fake).float()).mean()))
