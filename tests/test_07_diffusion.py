"""07 DDPM: the schedule, the forward process, the posterior, the samplers against exact answers, the U-Net's
shapes and parameter count, L_simple, overfitting real digits, and the EMA."""

import functools
import importlib
import math

import pytest
import torch

from common import data
from common.errors import UserError

unet = importlib.import_module("milestones.07_vae_gan_diffusion.unet")
diffusion = importlib.import_module("milestones.07_vae_gan_diffusion.diffusion")
Diffusion, EMA, UNet = diffusion.Diffusion, diffusion.EMA, unet.UNet


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_unet(**kw) -> UNet:
    args = dict(in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(14,), dropout=0.0,
                image_size=28)
    return UNet(**{**args, **kw})


@functools.lru_cache(maxsize=None)
def by_hand(t: int, T=1000, b1=1e-4, bT=0.02):
    """beta_t, alpha_t, abar_t from the definitions, in plain Python floats."""
    beta = lambda s: b1 + (s - 1) * (bT - b1) / (T - 1)  # noqa: E731  linear from beta_1 to beta_T
    return beta(t), 1 - beta(t), math.prod(1 - beta(s) for s in range(1, t + 1))


# ---- the schedule and the forward process --------------------------------------------------------------

def test_schedule_matches_the_formula():
    d = Diffusion()
    assert d.betas.dtype == torch.float64 and len(d.betas) == 1001
    assert d.betas[0] == 0 and d.alpha_bar[0] == 1  # entry 0 is the data itself
    for t in (1, 500, 1000):
        beta, alpha, abar = by_hand(t)
        assert d.betas[t].item() == pytest.approx(beta, rel=1e-12)
        assert d.alphas[t].item() == pytest.approx(alpha, rel=1e-12)
        assert d.alpha_bar[t].item() == pytest.approx(abar, rel=1e-10)
    assert d.betas[1].item() == pytest.approx(1e-4) and d.betas[1000].item() == pytest.approx(0.02)
    assert d.alpha_bar[1000].item() == pytest.approx(4.04e-5, rel=0.01)  # x_T is almost pure noise


def test_q_sample_is_the_closed_form():
    d = Diffusion()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1, torch.randn(4, 1, 3, 3, generator=g,
                                                                                               dtype=torch.float64)
    t = torch.tensor([1, 2, 500, 1000])
    want = torch.stack([math.sqrt(by_hand(s)[2]) * x0[i] + math.sqrt(1 - by_hand(s)[2]) * noise[i]
                        for i, s in enumerate(t.tolist())])
    torch.testing.assert_close(d.q_sample(x0, t, noise), want, rtol=1e-10, atol=1e-12)
    assert torch.equal(d.q_sample(x0, 0, noise), x0)  # t = 0: no noise yet


def test_closed_form_matches_iterating_the_forward_process():
    """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t, iterated from x_0 with N independent noise paths,
    has the mean and variance of q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t). The tolerance is 5 standard
    errors of each statistic (mean: sqrt(var / N); variance: var sqrt(2 / (N - 1)) for a Gaussian)."""
    d = Diffusion()
    N, x0 = 10000, torch.tensor([-1.0, 0.3], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = x0.repeat(N, 1)  # (N, 2): N paths for each of two starting points
    mean, var = x0.clone(), torch.zeros(2, dtype=torch.float64)  # the same chain's moments, propagated exactly
    for t in range(1, d.T + 1):
        beta = d.betas[t].item()
        eps = torch.randn(x.shape, generator=g).double()  # float32 draws (faster), float64 arithmetic
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * eps
        mean, var = math.sqrt(1 - beta) * mean, (1 - beta) * var + beta
        if t in (1, 10, 100, 500, 1000):
            abar = d.alpha_bar[t].item()
            torch.testing.assert_close(mean, math.sqrt(abar) * x0, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(var, torch.full((2,), 1 - abar, dtype=torch.float64), rtol=1e-12, atol=0)
            v = 1 - abar
            assert (x.mean(0) - math.sqrt(abar) * x0).abs().max() < 5 * math.sqrt(v / N), t
            assert (x.var(0) - v).abs().max() < 5 * v * math.sqrt(2 / (N - 1)), t


# ---- the posterior q(x_{t-1} | x_t, x_0) ---------------------------------------------------------------

def test_posterior_matches_eq7():
    d = Diffusion()
    x0, xt = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[-0.4]], dtype=torch.float64)
    for t in (2, 10, 500, 1000):
        beta, alpha, abar = by_hand(t)
        abar_prev = by_hand(t - 1)[2]
        want_mean = (math.sqrt(abar_prev) * beta / (1 - abar) * 0.7
                     + math.sqrt(alpha) * (1 - abar_prev) / (1 - abar) * -0.4)
        mean, var = d.posterior_mean_variance(x0, xt, t)
        assert mean.item() == pytest.approx(want_mean, rel=1e-9)
        assert var.item() == pytest.approx((1 - abar_prev) / (1 - abar) * beta, rel=1e-9)
    mean, var = d.posterior_mean_variance(x0, xt, 1)  # t = 1: x_0 is known exactly
    assert var.item() == 0 and mean.item() == pytest.approx(0.7, rel=1e-12)


@pytest.mark.parametrize("t", [2, 10, 500, 1000])
def test_posterior_is_bayes_rule(t):
    """q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0): both Gaussians evaluated on a
    fine grid, normalised numerically, their mean and variance by quadrature."""
    d = Diffusion()
    x0, xt = 0.7, -0.4
    beta, abar_prev = d.betas[t].item(), d.alpha_bar[t - 1].item()
    lik = (xt / math.sqrt(1 - beta), math.sqrt(beta / (1 - beta)))  # centre and width of each factor in x_{t-1}
    prior = (math.sqrt(abar_prev) * x0, math.sqrt(1 - abar_prev))
    lo, hi = min(lik[0], prior[0]) - 12 * max(lik[1], prior[1]), max(lik[0], prior[0]) + 12 * max(lik[1], prior[1])
    x = torch.linspace(lo, hi, 200001, dtype=torch.float64)  # values of x_{t-1}, covering both factors
    log_lik = -(xt - math.sqrt(1 - beta) * x) ** 2 / (2 * beta)  # q(x_t | x_{t-1}), eq. 2
    log_prior = -(x - math.sqrt(abar_prev) * x0) ** 2 / (2 * (1 - abar_prev))  # q(x_{t-1} | x_0), eq. 4
    p = (log_lik + log_prior - (log_lik + log_prior).max()).exp()
    p = p / p.sum()
    mean_num = (p * x).sum().item()
    var_num = (p * (x - mean_num) ** 2).sum().item()
    mean, var = d.posterior_mean_variance(torch.tensor([x0], dtype=torch.float64),
                                          torch.tensor([xt], dtype=torch.float64), t)
    assert mean.item() == pytest.approx(mean_num, rel=1e-8, abs=1e-12)
    assert var.item() == pytest.approx(var_num, rel=1e-6)


# ---- the U-Net -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,ch_mult,attn", [(28, (1, 2, 2), (14,)), (32, (1, 2, 2, 2), (16,)),
                                               (64, (1, 2, 2, 2), (16,))])
def test_unet_preserves_shape(size, ch_mult, attn):
    torch.manual_seed(0)
    net = UNet(in_channels=3, ch=16, ch_mult=ch_mult, num_res_blocks=1, attn_resolutions=attn, image_size=size)
    n_attn = sum(isinstance(m, unet.Attention) for m in net.modules())
    assert n_attn == 1 + 1 + 2  # the middle one, one per down block and two per up block at that resolution
    x, t = torch.randn(2, 3, size, size), torch.tensor([1, 1000])
    assert net(x, t).shape == (2, 3, size, size)


def test_unet_rejects_bad_sizes():
    with pytest.raises(UserError, match="image size 30 is not divisible by 8"):
        UNet(ch=16, image_size=30)
    net = UNet(ch=16, num_res_blocks=1)
    with pytest.raises(UserError, match="not divisible by 8"):
        net(torch.randn(1, 3, 30, 30), torch.tensor([5]))
    with pytest.raises(UserError, match="attention resolution 16"):
        tiny_unet(attn_resolutions=(16,))  # 28x28 with two levels has resolutions 28 and 14


def test_paper_cifar10_unet_has_35_746_307_parameters():
    n = sum(p.numel() for p in UNet().parameters())  # ch 128, mults 1,2,2,2, 2 blocks, attention at 16
    assert n == 35_746_307  # Ho et al. 2020, App. B: "35.7 million parameters"; exactly this in the release's net


def test_unet_is_the_papers_cifar10_layout():
    """Ho et al. 2020, App. B: four resolutions (32 to 4), two residual blocks per resolution on the way down (three
    on the way up, one per kept tensor), self-attention at 16 x 16 and in the middle, GroupNorm in place of weight
    norm, the time embedding through a two-layer MLP of width 4 ch; ch 128 and multipliers (1, 2, 2, 2) as the
    released CIFAR-10 run sets them. Each block as (input channels, output channels)."""
    net = UNet()

    def blocks(level):
        return [(b.conv1.in_channels, b.conv1.out_channels) for b in level.blocks]

    def attention(level):
        return [isinstance(a, unet.Attention) for a in level.attn]
    assert (net.conv_in.in_channels, net.conv_in.out_channels) == (3, 128)
    assert [(m.in_features, m.out_features) for m in net.temb if isinstance(m, torch.nn.Linear)] == [(128, 512),
                                                                                                    (512, 512)]
    # down: 32 x 32 at 128, then 16, 8, 4 at 256 (multipliers 1, 2, 2, 2)
    assert [blocks(level) for level in net.down] == [[(128, 128)] * 2, [(128, 256), (256, 256)], [(256, 256)] * 2,
                                                     [(256, 256)] * 2]
    assert [attention(level) for level in net.down] == [[False] * 2, [True] * 2, [False] * 2, [False] * 2]
    assert [isinstance(level.downsample, unet.Downsample) for level in net.down] == [True, True, True, False]
    assert [(b.conv1.in_channels, b.conv1.out_channels) for b in (net.mid1, net.mid2)] == [(256, 256)] * 2
    assert isinstance(net.mid_attn, unet.Attention)
    # up, from 4 x 4: each block takes the running tensor and one kept tensor (128 from the 32 x 32 level)
    assert [blocks(level) for level in net.up] == [[(512, 256)] * 3, [(512, 256)] * 3,
                                                   [(512, 256), (512, 256), (384, 256)],
                                                   [(384, 128), (256, 128), (256, 128)]]
    assert [attention(level) for level in net.up] == [[False] * 3, [False] * 3, [True] * 3, [False] * 3]
    assert [isinstance(level.upsample, unet.Upsample) for level in net.up] == [True, True, True, False]
    assert (net.conv_out.in_channels, net.conv_out.out_channels) == (128, 3)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert {m.num_groups for m in norms} == {32}  # Wu & He's 32 groups, as the release
    drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 4 * 2 + 2 + 4 * 3 and {m.p for m in drops} == {0.1}  # App. B: 0.1 on CIFAR-10
    sizes = {}  # the resolution each level works at, seen from a forward pass
    for i, level in enumerate(net.down):
        level.blocks[0].register_forward_hook(lambda m, a, out, i=i: sizes.setdefault(i, tuple(out.shape[1:])) and None)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32), torch.tensor([10])).shape == (1, 3, 32, 32)
    assert sizes == {0: (128, 32, 32), 1: (256, 16, 16), 2: (256, 8, 8), 3: (256, 4, 4)}


def test_unet_uses_t_and_starts_predicting_zero():
    torch.manual_seed(0)
    net = tiny_unet()
    x = torch.randn(2, 1, 28, 28)
    assert net(x, torch.tensor([3, 3])).abs().max() < 1e-3  # zero-initialised output conv (as the release)
    for m in net.modules():  # give the "zero" layers real weights, then the output must depend on t
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.1)
    a, b = net(x, torch.tensor([3, 3])), net(x, torch.tensor([3, 900]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    emb = unet.timestep_embedding(torch.tensor([0, 7]), 8)
    w = [10000 ** (-i / 3) for i in range(4)]
    torch.testing.assert_close(emb[1], torch.tensor([math.sin(7 * f) for f in w] + [math.cos(7 * f) for f in w]))
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))


# ---- the loss and the samplers -------------------------------------------------------------------------

def test_l_simple_of_an_oracle_is_zero():
    d = Diffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 6, 6, generator=g, dtype=torch.float64) * 2 - 1
    noise, t = torch.randn(x0.shape, generator=g, dtype=torch.float64), torch.randint(1, 1001, (8,), generator=g)
    assert d.loss(lambda x_t, s: noise, x0, t, noise).item() == 0  # returns the true noise

    def knows_x0(x_t, s):  # recovers eps from x_t by knowing x_0 (eq. 4 solved for eps)
        abar = torch.tensor([by_hand(k)[2] for k in s.tolist()], dtype=torch.float64).view(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    assert d.loss(knows_x0, x0, t, noise).item() < 1e-20
    zero = d.loss(lambda x_t, s: torch.zeros_like(x_t), x0, t, noise).item()  # E eps^2 = 1
    assert abs(zero - 1) < 5 * math.sqrt(2 / noise.numel())


def gaussian_oracle(d: Diffusion, m: float, s: float):
    """For data x_0 ~ N(m, s^2), x_t ~ N(sqrt(abar) m, abar s^2 + 1 - abar), and the best possible predictor of
    eps given x_t (the minimiser of L_simple) is E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) m) / var_t."""
    def eps(x_t, t):
        abar = d.alpha_bar.to(x_t.dtype)[t].view(-1, *[1] * (x_t.dim() - 1))
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * m) / (abar * s ** 2 + 1 - abar)
    return eps


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm_beta_tilde", "ddim"])
def test_samplers_with_the_exact_eps_recover_the_data_distribution(sampler):
    """With the optimal eps_theta for Gaussian data, Algorithm 2 (and DDIM) must turn N(0, I) into the data's
    N(m, s^2). Tolerance: 5 standard errors plus 0.01 for the chain's discretisation. (DDIM runs all T steps
    here: with 50 it shrinks this Gaussian's std to 0.176, see the next test.)"""
    m, s, N = 0.5, 0.2, 10000
    d = Diffusion(variance="beta_tilde" if sampler == "ddpm_beta_tilde" else "beta")
    g = torch.Generator().manual_seed(2)
    x_T = torch.randn(N, 1, generator=g, dtype=torch.float64)
    if sampler == "ddim":
        x = d.ddim_sample(gaussian_oracle(d, m, s), (N, 1), steps=d.T, x_T=x_T)
    else:
        x = d.sample(gaussian_oracle(d, m, s), (N, 1), generator=g, x_T=x_T)
    assert abs(x.mean().item() - m) < 5 * s / math.sqrt(N) + 0.01
    assert abs(x.std().item() - s) < 5 * s / math.sqrt(2 * N) + 0.01


def test_ddim_on_gaussian_data_is_the_exact_linear_map():
    """For data N(0, s^2) and the exact eps, one eta = 0 jump t -> s is x_s = k x_t with (by hand, from
    x0_hat = sqrt(a_t) s^2 x_t / v_t and eps_hat = sqrt(1 - a_t) x_t / v_t, v_t = a_t s^2 + 1 - a_t)
        k = (sqrt(a_s a_t) s^2 + sqrt((1 - a_s)(1 - a_t))) / v_t.
    By Cauchy-Schwarz k <= sqrt(v_s / v_t): every coarse jump loses variance, the finer the less."""
    d, s = Diffusion(), 0.2
    x_T = torch.linspace(-3, 3, 7, dtype=torch.float64).view(7, 1)
    taus = [1000, 667, 334, 1]  # linspace(1000, 1, 4)
    K = 1.0
    for t, u in zip(taus, taus[1:] + [0]):
        a_t, a_s = by_hand(t)[2], (by_hand(u)[2] if u else 1.0)
        K *= (math.sqrt(a_s * a_t) * s ** 2 + math.sqrt((1 - a_s) * (1 - a_t))) / (a_t * s ** 2 + 1 - a_t)
    x0 = d.ddim_sample(gaussian_oracle(d, 0.0, s), (7, 1), steps=4, x_T=x_T)
    torch.testing.assert_close(x0, K * x_T, rtol=1e-9, atol=1e-12)
    assert K < s  # the std of x_0 falls short of the data's


def test_sampling_a_tiny_model_runs_and_keeps_the_trajectory():
    d = Diffusion(T=10)
    torch.manual_seed(0)
    net = tiny_unet(dropout=0.1).train()
    g = torch.Generator().manual_seed(3)
    x, frames = d.sample(net, (2, 1, 28, 28), generator=g, return_trajectory=True)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()
    assert frames.shape == (11, 2, 1, 28, 28) and torch.equal(frames[-1], x)
    assert net.training  # sampled in eval mode, mode restored
    _, some = d.sample(net, (2, 1, 28, 28), return_trajectory=True, trajectory_every=5)
    assert len(some) == 3  # t = 10, 5, 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = d.sample(net, (2, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    x, frames = d.ddim_sample(net, (2, 1, 28, 28), steps=4, return_trajectory=True)
    assert frames.shape == (5, 2, 1, 28, 28) and x.shape == (2, 1, 28, 28)


def test_last_step_adds_no_noise_and_algorithm2_mean_is_the_posterior_mean():
    d = Diffusion()
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64) - 0.5  # inside [-1, 1]: clipping is a no-op
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    oracle = lambda x_t, s: noise  # noqa: E731
    x1 = d.q_sample(x0, 1, noise)
    a = d.p_sample(oracle, x1, 1, generator=torch.Generator().manual_seed(0))
    b = d.p_sample(oracle, x1, 1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    torch.testing.assert_close(a, x0)  # the exact eps at t = 1 gives x_0 back
    for t in (2, 300, 1000):  # eq. 11 = eq. 7 at x_0 from eq. 4; and the same noise is added either way
        x_t = d.q_sample(x0, t, noise)
        plain = d.p_sample(oracle, x_t, t, generator=torch.Generator().manual_seed(5))
        via_x0 = d.p_sample(oracle, x_t, t, generator=torch.Generator().manual_seed(5), clip_denoised=True)
        torch.testing.assert_close(plain, via_x0, rtol=1e-9, atol=1e-9)
        c = d.p_sample(oracle, x_t, t, generator=torch.Generator().manual_seed(6))
        assert not torch.allclose(plain, c)  # t > 1: noise is added


def test_ddim_is_deterministic_at_eta_0_and_is_ddpm_at_eta_1():
    d = Diffusion(T=20)
    torch.manual_seed(0)
    net = tiny_unet()
    for m in net.modules():  # a net whose output is not ~0
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.05)
    x_T = torch.randn(2, 1, 28, 28)
    a = d.ddim_sample(net, x_T.shape, steps=5, x_T=x_T, generator=torch.Generator().manual_seed(0))
    b = d.ddim_sample(net, x_T.shape, steps=5, x_T=x_T, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    c = d.ddim_sample(net, x_T.shape, steps=5, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, c)
    # eta = 1 over all T steps draws the same noise as Algorithm 2 with sigma_t^2 = beta~_t
    ddim = d.ddim_sample(net, x_T.shape, steps=20, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(7))
    ddpm = Diffusion(T=20, variance="beta_tilde").sample(net, x_T.shape, x_T=x_T,
                                                         generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="DDIM steps"):
        d.ddim_sample(net, x_T.shape, steps=21)


# ---- training on real digits ---------------------------------------------------------------------------

def test_tiny_unet_overfits_a_batch_of_mnist(data_root):
    """Eight real digits, average-pooled to 14x14 (to keep the test to seconds on a shared CPU), in [-1, 1].
    The loss is measured on a fixed set of (t, eps) draws, against two references: the untrained net (which
    predicts eps = 0, loss 1) and the best predictor for data that were white noise N(0, I),
    eps_hat = sqrt(1 - abar_t) x_t, which a net gets by learning nothing about digits."""
    x = data.load("mnist", data_root)["train"][0][:8].float() / 127.5 - 1  # (8, 1, 28, 28) in [-1, 1]
    x = torch.nn.functional.avg_pool2d(x, 2)  # (8, 1, 14, 14)
    d = Diffusion()
    torch.manual_seed(0)
    net = tiny_unet(ch=8, attn_resolutions=(7,), image_size=14)
    g = torch.Generator().manual_seed(0)  # 4 draws of (t, eps) per image
    x_eval, t_eval = x.repeat(4, 1, 1, 1), torch.randint(1, 1001, (32,), generator=g)
    eps_eval = torch.randn(x_eval.shape, generator=g)
    abar = d.alpha_bar.float()[t_eval].view(-1, 1, 1, 1)
    white_noise = d.loss(lambda x_t, t: (1 - abar).sqrt() * x_t, x_eval, t_eval, eps_eval).item()

    def eval_loss():
        with torch.no_grad():
            return d.loss(net, x_eval, t_eval, eps_eval).item()

    before = eval_loss()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(100):
        loss = d.loss(net, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert before == pytest.approx(1.0, abs=0.05)  # the net starts at eps_theta = 0
    assert after < 0.6 * white_noise < 0.2 * before, (before, white_noise, after)  # about 1.0, 0.26, 0.12


# ---- the EMA -------------------------------------------------------------------------------------------

def test_ema_update_is_the_weighted_average():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).double()
    old = {k: v.clone() for k, v in net.state_dict().items()}
    ema = EMA(net, decay=0.9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    new = {k: v.clone() for k, v in net.state_dict().items()}
    ema.update()
    for k in old:
        torch.testing.assert_close(ema.shadow[k], 0.9 * old[k] + 0.1 * new[k], rtol=1e-15, atol=1e-15)
        assert not torch.allclose(ema.shadow[k], new[k])
    copy = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).double()
    ema.copy_to(copy)
    assert all(torch.equal(copy.state_dict()[k], ema.shadow[k]) for k in old)
    other = EMA(copy, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and other.num_updates == 1
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in old)
    warm = EMA(net, decay=0.9999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    for _ in range(90):
        warm.update()
    assert warm.current_decay() == pytest.approx(91 / 100)
    assert EMA(net).current_decay() == 0.9999  # the paper's: no warm-up


def test_ema_update_is_two_foreach_calls_not_a_loop_over_tensors(monkeypatch):
    """On a GPU a Python loop over the U-Net's 328 tensors launched ~650 kernels a step; one foreach pair does
    the same arithmetic (values checked by the test above)."""
    net = UNet(1, 8, (1, 2), 1, (), 0.0, 16)
    ema = EMA(net, decay=0.9)
    calls = []
    real_mul, real_add = torch._foreach_mul_, torch._foreach_add_
    monkeypatch.setattr(torch, "_foreach_mul_", lambda *a, **k: calls.append("mul") or real_mul(*a, **k))
    monkeypatch.setattr(torch, "_foreach_add_", lambda *a, **k: calls.append("add") or real_add(*a, **k))
    ema.update()
    ema.update()
    assert calls == ["mul", "add", "mul", "add"]
