"""Denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020): the forward process, the training loss,
the sampler, and the weight average the paper samples from.

The forward process adds Gaussian noise in T small steps with a fixed schedule beta_1 < ... < beta_T:
    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)                                      (eq. 2)
and has a closed form for any t, with alpha_t = 1 - beta_t and abar_t = prod_{s<=t} alpha_s:
    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)                                            (eq. 4)
The network eps_theta(x_t, t) predicts the noise eps in x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, trained
with the simplified bound  L_simple = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2                 (eq. 14)
and generation runs the learned reverse chain from x_T ~ N(0, I) down to x_0 (Algorithm 2).

The time-step convention, once: t is the paper's t everywhere, an integer in 1..T, and the model is called
with it. Every schedule tensor has T + 1 entries indexed by t, and entry 0 describes the data itself
(beta_0 = 0, alpha_0 = 1, abar_0 = 1), so `betas[t]` is the paper's beta_t with no off-by-one anywhere and
q_sample(x0, 0) = x0. (The released TF code indexes steps 0..T-1 and feeds those to the network: the same
model with its time embedding's input shifted by one.)

The schedule is computed in float64 and cast to the data's dtype and device when used (MPS has no float64).
Images are expected in [-1, 1].
"""

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.device import unwrap
from common.errors import UserError


class Diffusion:
    """The paper's linear schedule (T = 1000, beta from 1e-4 to 0.02) and everything computed from it.

    variance: the reverse process's fixed sigma_t^2. "beta" (sigma_t^2 = beta_t, the paper's CIFAR-10 choice)
    or "beta_tilde" (the posterior variance of eq. 7; the paper reports both give similar samples).
    """

    def __init__(self, T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02, variance: str = "beta"):
        if variance not in ("beta", "beta_tilde"):
            raise UserError(f"variance must be beta or beta_tilde, got {variance!r}")
        if T < 1 or not 0 < beta_1 <= beta_T < 1:
            raise UserError(f"need T >= 1 and 0 < beta_1 <= beta_T < 1, got T={T}, beta_1={beta_1}, beta_T={beta_T}")
        self.T, self.variance = T, variance
        zero = torch.zeros(1, dtype=torch.float64)
        self.betas = torch.cat([zero, torch.linspace(beta_1, beta_T, T, dtype=torch.float64)])  # (T+1,), [0] = 0
        self.alphas = 1 - self.betas  # alpha_t = 1 - beta_t
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)  # abar_t = prod_{s=1..t} alpha_s; abar_0 = 1
        abar, abar_prev, b = self.alpha_bar[1:], self.alpha_bar[:-1], self.betas[1:]
        # eq. 7, for t = 1..T (entry 0 is never used: there is no step below the data)
        self.beta_tilde = torch.cat([zero, (1 - abar_prev) / (1 - abar) * b])  # beta~_t; beta~_1 = 0
        self.mean_coef_x0 = torch.cat([zero, abar_prev.sqrt() * b / (1 - abar)])  # mu~_t's weight on x_0
        self.mean_coef_xt = torch.cat([zero, self.alphas[1:].sqrt() * (1 - abar_prev) / (1 - abar)])  # on x_t
        self.sigma2 = self.betas if variance == "beta" else self.beta_tilde
        self._tables = {}

    def at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Schedule entry `name` at steps t (B,), as (B, 1, ..., 1) in like's dtype and device."""
        key = (name, like.device, like.dtype)
        if key not in self._tables:  # cast on the CPU first, then move: float64 never reaches the device
            self._tables[key] = getattr(self, name).to(like.dtype).to(like.device)
        return self._tables[key][t].view(-1, *[1] * (like.dim() - 1))

    def _steps(self, t, x: torch.Tensor) -> torch.Tensor:
        """An int (the same step for the whole batch) or a (B,) tensor -> (B,) int64 on x's device."""
        if isinstance(t, int):
            return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        return t.to(x.device, torch.long)

    # ---- forward process and training -----------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t ~ q(x_t | x_0):  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps   (eq. 4)."""
        t = self._steps(t, x0)
        noise = torch.randn_like(x0) if noise is None else noise
        abar = self.at("alpha_bar", t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def loss(self, model, x0: torch.Tensor, t: torch.Tensor | None = None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """L_simple (eq. 14, Algorithm 1): || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2
        with t ~ Uniform{1, ..., T} and eps ~ N(0, I), averaged over the batch and every pixel (fp32 scalar)."""
        if t is None:
            t = torch.randint(1, self.T + 1, (x0.shape[0],), device=x0.device)  # t ~ Uniform{1..T}
        noise = torch.randn_like(x0) if noise is None else noise  # eps ~ N(0, I)
        eps = model(self.q_sample(x0, t, noise), t)
        return F.mse_loss(eps.float(), noise.float())

    # ---- the true posterior and the reverse process ---------------------------------------------------

    def posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)   (eqs. 6-7), t in 1..T:
        mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
        beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.   Returns mu~ (like x_t) and beta~ (B, 1, 1, 1)."""
        t = self._steps(t, x_t)
        mean = self.at("mean_coef_x0", t, x_t) * x0 + self.at("mean_coef_xt", t, x_t) * x_t
        return mean, self.at("beta_tilde", t, x_t)

    def predict_x0(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """eq. 4 solved for x_0:  x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        t = self._steps(t, x_t)
        abar = self.at("alpha_bar", t, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    @torch.no_grad()
    def p_sample(self, model, x_t: torch.Tensor, t, generator: torch.Generator | None = None,
                 clip_denoised: bool = False) -> torch.Tensor:
        """One step of Algorithm 2, x_t -> x_{t-1}:
        x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) + sigma_t z,
        z ~ N(0, I) for t > 1 and z = 0 at t = 1 (the last step returns the mean).

        clip_denoised (not in Algorithm 2; the released code's sampler does it): estimate x_0 from eps_theta,
        clip it to [-1, 1] and take the posterior mean mu~_t(x_t, x_0) instead. Without the clip the two
        means are the same number (eq. 7 with x_0 from eq. 4 is eq. 11)."""
        t = self._steps(t, x_t)
        eps = model(x_t, t).to(x_t.dtype)
        if clip_denoised:
            mean, _ = self.posterior_mean_variance(self.predict_x0(x_t, t, eps).clamp(-1, 1), x_t, t)
        else:
            beta, abar = self.at("betas", t, x_t), self.at("alpha_bar", t, x_t)
            mean = (x_t - beta / (1 - abar).sqrt() * eps) / self.at("alphas", t, x_t).sqrt()  # eq. 11
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        z = z * (t > 1).view(-1, *[1] * (x_t.dim() - 1))  # no noise at t = 1
        return mean + self.at("sigma2", t, x_t).sqrt() * z

    @torch.no_grad()
    def sample(self, model, shape, generator: torch.Generator | None = None, return_trajectory: bool = False,
               x_T: torch.Tensor | None = None, clip_denoised: bool = False, trajectory_every: int = 1,
               device=None):
        """Algorithm 2: x_T ~ N(0, I), then p_sample for t = T, ..., 1. Returns x_0, or (x_0, frames) with
        frames (F, *shape) on the CPU: x_t for t = T and every t divisible by trajectory_every, down to 0
        (T + 1 frames at the default 1). generator, if given, must live on the sampling device, which is
        x_T's, else `device`, else the model's."""
        with _eval(model):
            x = self._start(model, shape, generator, x_T, device)
            frames = [x.cpu()] if return_trajectory else None
            for t in range(self.T, 0, -1):
                x = self.p_sample(model, x, t, generator, clip_denoised)
                if return_trajectory and (t - 1) % trajectory_every == 0:
                    frames.append(x.cpu())
        return (x, torch.stack(frames)) if return_trajectory else x

    # ---- a later sampler --------------------------------------------------------------------------------

    @torch.no_grad()
    def ddim_sample(self, model, shape, steps: int = 50, eta: float = 0.0, generator: torch.Generator | None = None,
                    x_T: torch.Tensor | None = None, return_trajectory: bool = False, clip_denoised: bool = False,
                    device=None):
        """DDIM (Song, Meng & Ermon 2020, "Denoising Diffusion Implicit Models", eq. 12): NOT part of Ho et al.
        2020. The same trained eps_theta, sampled on a sub-sequence tau of `steps` time steps (evenly spaced from
        T down to 1, then 0); each jump t -> s:
            x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_theta + sigma z,   x0_hat from eq. 4,
            sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s).
        tau = round(linspace(T, 1, steps)): T, ..., 1, distinct.
        eta = 0 is deterministic given x_T; eta = 1 with steps = T is DDPM with sigma_t^2 = beta~_t.
        Returns x_0, or (x_0, frames (steps + 1, *shape) on the CPU)."""
        if not 1 <= steps <= self.T:
            raise UserError(f"DDIM steps must be between 1 and T={self.T}, got {steps}")
        taus = torch.linspace(self.T, 1, steps, dtype=torch.float64).round().long().unique().tolist()[::-1]
        with _eval(model):
            x = self._start(model, shape, generator, x_T, device)
            frames = [x.cpu()] if return_trajectory else None
            for t, s in zip(taus, taus[1:] + [0]):
                abar_t, abar_s = self.alpha_bar[t].item(), self.alpha_bar[s].item()
                eps = model(x, self._steps(t, x)).to(x.dtype)
                x0 = self.predict_x0(x, t, eps)
                if clip_denoised:
                    x0 = x0.clamp(-1, 1)
                    eps = (x - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)  # the noise that x0 implies
                sigma = eta * math.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
                x = math.sqrt(abar_s) * x0 + math.sqrt(max(1 - abar_s - sigma ** 2, 0.0)) * eps
                if sigma > 0:
                    x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                if return_trajectory:
                    frames.append(x.cpu())
        return (x, torch.stack(frames)) if return_trajectory else x

    def _start(self, model, shape, generator, x_T, device) -> torch.Tensor:
        """x_T ~ N(0, I) (or the given x_T) on the sampling device."""
        if x_T is not None:
            return x_T.clone()
        if device is None:
            p = next(model.parameters(), None) if isinstance(model, nn.Module) else None
            device = p.device if p is not None else "cpu"
        return torch.randn(tuple(shape), generator=generator, device=device)


@contextlib.contextmanager
def _eval(model):
    """Run a module in eval mode (no dropout) for sampling and restore its mode afterwards."""
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


class EMA:
    """Exponential moving average of a model's parameters; the paper samples from it (decay 0.9999).

        update():  shadow <- d * shadow + (1 - d) * param        after every optimizer step

    Without warm-up (the default, as in the paper: TF's ExponentialMovingAverage with no step count) d is
    `decay` from the first update, so the average starts at the initial weights and needs ~1/(1-d) = 10,000
    updates to forget them. warmup=True uses TF's num_updates rule d = min(decay, (1 + n) / (10 + n)) after
    n earlier updates, for short runs. Only parameters are averaged (the U-Net has no buffers).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False):
        if not 0 <= decay < 1:
            raise UserError(f"EMA decay must be in [0, 1), got {decay}")
        self.model, self.decay, self.warmup = unwrap(model), decay, warmup
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in self.model.named_parameters()}

    def current_decay(self) -> float:
        """The d the next update() will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        shadow = [self.shadow[name] for name, _ in self.model.named_parameters()]
        params = [p.detach() for _, p in self.model.named_parameters()]
        torch._foreach_mul_(shadow, d)  # d * shadow + (1 - d) * param, for every tensor in two kernel launches
        torch._foreach_add_(shadow, params, alpha=1 - d)  # (a loop over the U-Net's 328 tensors made ~650)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into `module` (a model of the same architecture, e.g. a copy for sampling)."""
        for name, p in unwrap(module).named_parameters():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["shadow"].keys() != self.shadow.keys():
            raise UserError("the EMA state does not match this model's parameters (a different architecture?)")
        self.decay, self.warmup, self.num_updates = state["decay"], state["warmup"], state["num_updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
