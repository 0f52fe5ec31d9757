"""The variational auto-encoder of Kingma & Welling (2013), "Auto-Encoding Variational Bayes" (AEVB), with
the importance-sampled log-likelihood of Burda, Grosse & Salakhutdinov (2015) to measure it.

Generative model:    p(z) = N(0, I),    p(x|z) = prod_i Bernoulli(x_i; y_i),  y = sigmoid(decoder(z))
Recognition model:   q(z|x) = N(mu, diag sigma^2),   (mu, log sigma^2) = encoder(x)

The paper's MLPs (appendix C): one hidden layer of tanh units in each network,
    decoder (C.1)   h = tanh(W3 z + b3),   y = sigmoid(W4 h + b4)
    encoder (C.2)   h = tanh(W3 x + b3),   mu = W4 h + b4,   log sigma^2 = W5 h + b5
with 500 hidden units for MNIST (section 5; 200 for the smaller Frey Face set). The IWAE paper's
one-stochastic-layer model is the same with two hidden layers: 784-200-200-50 and 50-200-200-784.

The objective, per data point (eq. 10, the Gaussian KL in closed form from appendix B):

    ELBO(x) = -KL(q(z|x) || p(z)) + E_q[log p(x|z)]
            =  1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2) + log p(x|z),   z = mu + sigma * eps

one sample of eps ~ N(0, I) per data point (L = 1, as in the paper's experiments). ELBO <= log p(x).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}
LOG_2PI = math.log(2 * math.pi)


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers sizes[0] -> ... -> sizes[-1], the activation after every one of them."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian MLP encoder q(z|x), Bernoulli MLP decoder p(x|z); the decoder mirrors the encoder's hidden sizes.

    hidden=(500,), activation="tanh" is the paper's MNIST model (z_dim 3 to 200 in its Figure 2, 2 in Figure 4);
    hidden=(200, 200), z_dim=50 is the IWAE paper's one-stochastic-layer model.
    init_std: if given, every weight and bias is drawn from N(0, init_std^2) (the paper draws all parameters
    from "N(0, 0.01)"); by default PyTorch's own initialisation.
    """

    def __init__(self, x_dim: int = 784, hidden: tuple[int, ...] = (500,), z_dim: int = 20,
                 activation: str = "tanh", init_std: float | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise UserError(f"VAE activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not hidden or min(hidden) < 1 or z_dim < 1:
            raise UserError(f"VAE needs at least one hidden layer and z_dim >= 1, got hidden={hidden}, z_dim={z_dim}")
        self.x_dim, self.hidden, self.z_dim, self.activation = x_dim, tuple(hidden), z_dim, activation
        self.encoder = _mlp([x_dim, *hidden], activation)
        self.mu = nn.Linear(hidden[-1], z_dim)
        self.logvar = nn.Linear(hidden[-1], z_dim)
        self.decoder = nn.Sequential(_mlp([z_dim, *hidden[::-1]], activation), nn.Linear(hidden[0], x_dim))
        if init_std is not None:
            for p in self.parameters():
                nn.init.normal_(p, 0.0, init_std)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, ...) with x_dim values -> mu, log sigma^2, each (B, Z)."""
        h = self.encoder(x.flatten(1))  # (B, H)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., Z) -> Bernoulli logits (..., x_dim): p(x_i = 1 | z) = sigmoid(logit_i)."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """A sample of q(z|x) that is a differentiable function of (mu, log sigma^2): the trick of section 2.4."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps  # z = mu + sigma * eps,  eps ~ N(0, I)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, ...) -> logits (B, x_dim) of p(x|z) at one z ~ q(z|x), and q's mu, log sigma^2 (B, Z)."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixel means of n samples from the model: z ~ p(z), then E[x|z] = sigmoid(decoder(z)). (n, x_dim)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.z_dim, device=device, generator=generator)
        return torch.sigmoid(self.decode(z).float())


# ---------------------------------------------------------------------------------------------------------
# The bound and the likelihood
# ---------------------------------------------------------------------------------------------------------

def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses and log densities in at least fp32, even when the forward pass ran in bf16/fp16 autocast."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) per example (B,), in closed form (appendix B)."""
    mu, logvar = _full(mu), _full(logvar)
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)  # -1/2 sum_j (1 + log s^2 - mu^2 - s^2)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum_i x_i log y_i + (1 - x_i) log(1 - y_i), y = sigmoid(logits), summed over pixels (..., )."""
    logits = _full(logits)
    x = x.to(logits.dtype).expand_as(logits)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def elbo(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """The per-example lower bound (B,) on log p(x), in nats, from one sample z ~ q(z|x) (eq. 10, L = 1)."""
    x = x.flatten(1)
    logits, mu, logvar = model(x)
    return bernoulli_log_likelihood(logits, x) - gaussian_kl(mu, logvar)  # E_q[log p(x|z)] - KL(q || p)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor | float = 0.0,
                         logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last dim."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + LOG_2PI).sum(-1)


@torch.no_grad()
def importance_log_likelihood(model: VAE, x: torch.Tensor, k: int = 5000, chunk: int = 65536) -> torch.Tensor:
    """log p(x) per example (B,), from k importance samples of q(z|x) (Burda et al. 2015's k-sample bound L_k):

        log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)
                  = logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k,    z_i ~ q(z|x)

    A lower bound in expectation that tightens as k grows; k = 1 is the ELBO with a sampled KL, and k = 5000 is
    the IWAE paper's evaluation. chunk bounds memory: at most `chunk` decoded images (samples x examples) at once.
    """
    if k < 1:
        raise UserError(f"importance sampling needs k >= 1 samples, got {k}")
    x = x.flatten(1)  # (B, D)
    mu, logvar = model.encode(x)
    mu, logvar = _full(mu), _full(logvar)  # (B, Z)
    per_pass = max(1, chunk // x.shape[0])
    log_w = []
    for start in range(0, k, per_pass):
        n = min(per_pass, k - start)
        eps = torch.randn(n, *mu.shape, device=mu.device, dtype=mu.dtype)  # (n, B, Z)
        z = mu + torch.exp(0.5 * logvar) * eps  # z_i ~ q(z|x)
        log_px_z = bernoulli_log_likelihood(model.decode(z), x)  # (n, B)
        log_pz = gaussian_log_density(z)  # log p(z_i), N(0, I)
        log_qz = gaussian_log_density(z, mu, logvar)  # log q(z_i|x)
        log_w.append(log_px_z + log_pz - log_qz)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)


# ---------------------------------------------------------------------------------------------------------
# Data and pictures
# ---------------------------------------------------------------------------------------------------------

def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarisation: each pixel is 1 with probability equal to its intensity (uint8 0..255 or float
    in [0, 1]). Drawn afresh every time a batch is used (the IWAE paper's "dynamic" binarisation)."""
    p = x.float() / 255 if x.dtype == torch.uint8 else x.float().clamp(0, 1)
    return torch.bernoulli(p, generator=generator)


@torch.no_grad()
def manifold_grid(model: VAE, n: int = 20) -> torch.Tensor:
    """The learned manifold of a 2-D latent space (the paper's appendix A, Figure 4): linearly spaced points of the
    unit square mapped through the inverse Gaussian CDF to z, decoded to pixel means. Row-major, z_2 falling
    down the rows and z_1 rising along them: (n*n, 1, side, side) in [0, 1]."""
    if model.z_dim != 2:
        raise UserError(f"the manifold picture needs a 2-D latent space, this VAE has z_dim={model.z_dim}")
    side = math.isqrt(model.x_dim)
    if side * side != model.x_dim:
        raise UserError(f"the manifold picture needs square images, x_dim={model.x_dim} is not a square")
    device = next(model.parameters()).device
    u = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n  # midpoints: avoids icdf(0) = -inf
    g = torch.distributions.Normal(0.0, 1.0).icdf(u)  # (n,)
    z1, z2 = g.view(1, n).expand(n, n), g.flip(0).view(n, 1).expand(n, n)
    z = torch.stack([z1, z2], dim=-1).reshape(n * n, 2)
    return torch.sigmoid(model.decode(z).float()).view(n * n, 1, side, side)
