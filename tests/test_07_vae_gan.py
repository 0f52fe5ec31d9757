"""07_vae_gan_diffusion, the VAE and GAN halves: the VAE's bound and likelihood against reference computations on
real digits, the GAN losses against hand computations, and the networks' shapes, initialisation and sizes."""

import importlib
import math

import pytest
import torch
import torch.nn as nn

from common.errors import UserError

vae = importlib.import_module("milestones.07_vae_gan_diffusion.vae")
gan = importlib.import_module("milestones.07_vae_gan_diffusion.gan")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks: one thread is many times faster than two fighting over a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist(data_root):
    from common import data
    return data.load("mnist", data_root)


@pytest.fixture(scope="module")
def fitted_vae(mnist):
    """The paper's 784-500-20 tanh VAE after 150 Adam steps on one fixed batch of 64 binarised training digits."""
    x = vae.binarize(mnist["train"][0][:64], torch.Generator().manual_seed(0)).flatten(1)  # (64, 784)
    torch.manual_seed(0)
    model = vae.VAE(784, (500,), 20, "tanh")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = vae.elbo(model, x).mean().item()
    for _ in range(150):
        loss = -vae.elbo(model, x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = vae.elbo(model, x).mean().item()
    return model, before, after


# ---------------------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------------------

def test_gaussian_kl_matches_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 4, generator=g, dtype=torch.float64)
    n = 200_000
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, 3, 4, generator=g, dtype=torch.float64)  # z ~ q
    log_q = (-0.5 * ((z - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))).sum(-1)  # (n, 3)
    log_p = (-0.5 * (z ** 2 + math.log(2 * math.pi))).sum(-1)
    ratio = log_q - log_p  # KL(q || p) = E_q[log q - log p]
    mc, se = ratio.mean(0), ratio.std(0) / math.sqrt(n)
    kl = vae.gaussian_kl(mu, logvar)
    assert kl.shape == (3,) and kl.dtype == torch.float64
    assert torch.all((kl - mc).abs() < 4 * se), (kl, mc, se)
    assert vae.gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() == 0  # q = p


def test_reparameterize_is_mu_plus_sigma_eps_and_passes_gradients():
    mu = torch.tensor([[0.5, -1.0]], requires_grad=True)
    logvar = torch.tensor([[0.2, -0.6]], requires_grad=True)
    torch.testing.assert_close(vae.VAE.reparameterize(mu, logvar, torch.zeros(1, 2)), mu)  # eps = 0 -> mu
    eps = torch.tensor([[1.5, -0.3]])
    z = vae.VAE.reparameterize(mu, logvar, eps)
    z.sum().backward()
    sigma = torch.exp(0.5 * logvar.detach())
    torch.testing.assert_close(mu.grad, torch.ones(1, 2))  # dz/dmu = 1
    torch.testing.assert_close(logvar.grad, 0.5 * sigma * eps)  # dz/dlogvar = sigma eps / 2
    torch.manual_seed(0)
    draws = vae.VAE.reparameterize(mu.detach().expand(100_000, 2), logvar.detach().expand(100_000, 2))
    torch.testing.assert_close(draws.mean(0), mu.detach()[0], atol=0.02, rtol=0)
    torch.testing.assert_close(draws.std(0), sigma[0], atol=0.02, rtol=0)


def test_vae_shapes_sizes_and_bad_arguments():
    model = vae.VAE(784, (500,), 20)
    x = torch.rand(3, 1, 28, 28)
    logits, mu, logvar = model(x)
    assert logits.shape == (3, 784) and mu.shape == logvar.shape == (3, 20)
    assert model.decode(torch.zeros(7, 4, 20)).shape == (7, 4, 784)
    assert vae.elbo(model, x).shape == (3,)
    # the paper's MNIST model: 784-500-(20, 20) encoder, 20-500-784 decoder, a bias on every unit
    assert n_params(model) == (784 * 500 + 500) + 2 * (500 * 20 + 20) + (20 * 500 + 500) + (500 * 784 + 784)
    iwae = vae.VAE(784, (200, 200), 50)  # 784-200-200-50 and back
    enc = (784 * 200 + 200) + (200 * 200 + 200) + 2 * (200 * 50 + 50)
    dec = (50 * 200 + 200) + (200 * 200 + 200) + (200 * 784 + 784)
    assert n_params(iwae) == enc + dec
    assert vae.VAE(init_std=0.01).decoder[-1].weight.std().item() == pytest.approx(0.01, rel=0.05)
    default = vae.VAE()  # Kingma & Welling 2013, sec. 5: 500 tanh hidden units on MNIST; 20 is one of Figure 2's
    assert (default.x_dim, default.hidden, default.z_dim, default.activation) == (784, (500,), 20, "tanh")
    assert isinstance(default.encoder[1], torch.nn.Tanh) and len(default.encoder) == 2
    with pytest.raises(UserError):
        vae.VAE(activation="sigmoidal")
    with pytest.raises(UserError):
        vae.importance_log_likelihood(model, x, k=0)


def test_likelihood_is_exact_when_q_is_the_prior_and_the_decoder_ignores_z():
    """Then every importance weight equals p(x), so log p(x) = sum_i log Bernoulli(x_i; sigmoid(b_i)) for any k,
    the ELBO has the same value, and chunking (here 7 samples per pass, k = 50) cannot change it."""
    torch.manual_seed(0)
    model = vae.VAE(784, (50,), 3)
    with torch.no_grad():
        for head in (model.mu, model.logvar):
            head.weight.zero_()
            head.bias.zero_()  # q(z|x) = N(0, I) = p(z)
        model.decoder[-1].weight.zero_()  # logits = b, whatever z is
        b = model.decoder[-1].bias
    x = torch.bernoulli(torch.full((4, 784), 0.3))
    p = torch.sigmoid(b)
    exact = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)  # (4,)
    for k in (1, 50):
        torch.testing.assert_close(vae.importance_log_likelihood(model, x, k, chunk=7 * 4), exact)
    torch.testing.assert_close(vae.elbo(model, x), exact)


def test_vae_overfits_one_batch_of_real_digits(fitted_vae):
    _, before, after = fitted_vae
    assert before < -400  # an untrained decoder: about 784 log 2 = 543 nats
    assert after > before + 250 and after > -200, (before, after)


def test_elbo_below_importance_sampled_likelihood_which_grows_with_k(fitted_vae, mnist):
    model, _, _ = fitted_vae
    x = vae.binarize(mnist["test"][0][:100], torch.Generator().manual_seed(1)).flatten(1)  # (100, 784)
    torch.manual_seed(1)
    with torch.no_grad():
        reps = 20
        elbo = vae.elbo(model, x.repeat(reps, 1)).view(reps, -1)  # (20, 100): 20 one-sample bounds each
        is1 = vae.importance_log_likelihood(model, x.repeat(reps, 1), k=1).view(reps, -1)
    ll = {k: vae.importance_log_likelihood(model, x, k) for k in (10, 100)}
    # k = 1: log p(x|z) + log p(z) - log q(z|x) at one z ~ q, whose expectation is the ELBO itself
    d = (is1 - elbo).flatten()
    assert abs(d.mean().item()) < 4 * d.std().item() / math.sqrt(d.numel())
    # the bound lies below the likelihood, and the k-sample estimate rises with k
    assert torch.all(elbo.mean(0) <= ll[100]), (elbo.mean(0) - ll[100]).max()
    assert is1.mean() < ll[10].mean() < ll[100].mean()


def test_bf16_autocast_keeps_the_bounds_and_losses_in_float32():
    torch.manual_seed(0)
    model = vae.VAE(784, (200, 200), 50)
    x = torch.bernoulli(torch.full((4, 784), 0.3))
    G, D = gan.DCGenerator(100, 28, 1, 8), gan.DCDiscriminator(28, 1, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bound, ll = vae.elbo(model, x), vae.importance_log_likelihood(model, x, k=10)
        fake = D(G(G.noise(4)))
        losses = gan.discriminator_loss(D(torch.rand(4, 1, 28, 28) * 2 - 1), fake), gan.generator_loss(fake)
    assert bound.dtype == ll.dtype == torch.float32 and torch.isfinite(bound).all() and torch.isfinite(ll).all()
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)


def test_binarize_draws_each_pixel_with_its_intensity():
    x = torch.tensor([[0, 255, 128]], dtype=torch.uint8).expand(100_000, 3)
    b = vae.binarize(x, torch.Generator().manual_seed(0))
    assert b.dtype == torch.float32 and b.shape == x.shape and set(b.unique().tolist()) <= {0.0, 1.0}
    assert b[:, 0].sum() == 0 and b[:, 1].min() == 1
    assert b[:, 2].mean().item() == pytest.approx(128 / 255, abs=0.005)
    again = vae.binarize(x, torch.Generator().manual_seed(0))
    assert torch.equal(b, again)  # same generator state, same draw
    assert not torch.equal(b, vae.binarize(x))  # a fresh draw each time a batch is used
    assert vae.binarize(torch.full((1000,), 0.25), torch.Generator().manual_seed(0)).mean().item() == \
        pytest.approx(0.25, abs=0.05)  # float intensities in [0, 1] work too


def test_manifold_grid_decodes_the_inverse_cdf_grid():
    torch.manual_seed(0)
    model = vae.VAE(784, (50,), 2)
    grid = vae.manifold_grid(model, n=5)
    assert grid.shape == (25, 1, 28, 28) and 0 <= grid.min() and grid.max() <= 1
    # the grid's centre is z = (0, 0), the inverse CDF of the unit square's centre
    torch.testing.assert_close(grid[12].flatten(), torch.sigmoid(model.decode(torch.zeros(1, 2)))[0].detach())
    # along a row z_1 rises: the left and right ends are z_1 = -/+ the same value
    with torch.no_grad():
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([0.1, 0.9]))
        ends = torch.sigmoid(model.decode(torch.stack([z, torch.zeros(2)], 1)))
    torch.testing.assert_close(grid[10].flatten(), ends[0])
    torch.testing.assert_close(grid[14].flatten(), ends[1])
    with pytest.raises(UserError):
        vae.manifold_grid(vae.VAE(z_dim=20))


# ---------------------------------------------------------------------------------------------------------
# GAN losses
# ---------------------------------------------------------------------------------------------------------

def test_gan_losses_against_hand_computations():
    zero = torch.zeros(4)
    torch.testing.assert_close(gan.discriminator_loss(zero, zero), torch.tensor(2 * math.log(2)))  # D = 1/2
    torch.testing.assert_close(gan.generator_loss(zero, "minimax"), torch.tensor(-math.log(2)))
    torch.testing.assert_close(gan.generator_loss(zero, "nonsaturating"), torch.tensor(math.log(2)))

    def sig(a):
        return 1 / (1 + math.exp(-a))

    real, fake = [1.5, -0.5], [0.3, -2.0]
    by_hand = -(sum(math.log(sig(a)) for a in real) / 2 + sum(math.log(1 - sig(a)) for a in fake) / 2)
    torch.testing.assert_close(gan.discriminator_loss(torch.tensor(real), torch.tensor(fake)),
                               torch.tensor(by_hand, dtype=torch.float32))
    torch.testing.assert_close(gan.generator_loss(torch.tensor(fake), "minimax"),
                               torch.tensor(sum(math.log(1 - sig(a)) for a in fake) / 2, dtype=torch.float32))
    torch.testing.assert_close(gan.generator_loss(torch.tensor(fake), "nonsaturating"),
                               torch.tensor(-sum(math.log(sig(a)) for a in fake) / 2, dtype=torch.float32))
    # confident logits stay finite: log sigmoid, never log(sigmoid)
    assert gan.discriminator_loss(torch.tensor([80.0]), torch.tensor([-80.0])).item() == pytest.approx(0, abs=1e-6)
    assert gan.generator_loss(torch.tensor([-200.0]), "nonsaturating").item() == pytest.approx(200)
    assert gan.generator_loss(torch.tensor([200.0]), "minimax").item() == pytest.approx(-200)
    assert gan.generator_loss(torch.tensor([0.0], dtype=torch.bfloat16)).dtype == torch.float32
    with pytest.raises(UserError):
        gan.generator_loss(zero, "wasserstein")


def test_nonsaturating_loss_has_the_strong_gradient_where_d_rejects_the_fakes():
    """Section 3: when D(G(z)) is near 0, log(1 - D(G(z))) is flat; -log D(G(z)) is not."""
    grads = {}
    for kind in ("minimax", "nonsaturating"):
        a = torch.tensor([-8.0], requires_grad=True)  # D(G(z)) = sigmoid(-8) = 3.4e-4
        gan.generator_loss(a, kind).backward()
        grads[kind] = a.grad.item()
    d = 1 / (1 + math.exp(8))
    assert grads["minimax"] == pytest.approx(-d, rel=1e-4)  # d/da log(1 - sigmoid(a)) = -sigmoid(a)
    assert grads["nonsaturating"] == pytest.approx(-(1 - d), rel=1e-4)  # d/da -log sigmoid(a) = -(1 - sigmoid(a))
    assert abs(grads["nonsaturating"]) > 1000 * abs(grads["minimax"])  # both push a up; one much harder


# ---------------------------------------------------------------------------------------------------------
# The networks
# ---------------------------------------------------------------------------------------------------------

def test_maxout_takes_the_max_over_each_units_pieces():
    m = gan.Maxout(1, units=2, pieces=3)
    with torch.no_grad():
        m.linear.weight.copy_(torch.tensor([[1.0], [2.0], [-1.0], [0.0], [-3.0], [5.0]]))
        m.linear.bias.zero_()
    torch.testing.assert_close(m(torch.tensor([[2.0], [-1.0]])), torch.tensor([[4.0, 10.0], [1.0, 3.0]]))


def test_mlp_gan_is_the_released_mnist_configuration():
    torch.manual_seed(0)
    G, D = gan.MLPGenerator(), gan.MLPDiscriminator()
    # mnist.yaml: G 100 -> 1200 -> 1200 -> 784; D 784 -> maxout 240x5 -> maxout 240x5 -> 1
    assert n_params(G) == (100 * 1200 + 1200) + (1200 * 1200 + 1200) + (1200 * 784 + 784)
    assert n_params(D) == (784 * 240 * 5 + 240 * 5) + (240 * 240 * 5 + 240 * 5) + (240 + 1)
    # mnist.yaml: irange 0.05 in G, 0.005 in D (uniform weights; 120k and 940k draws reach the bound's last 2%)
    assert 0.049 < G.hidden[0].weight.abs().max() <= 0.05 and 0.0049 < D.hidden[0].linear.weight.abs().max() <= 0.005
    assert D.out.weight.abs().max() <= 0.005 and G.out.weight.abs().max() <= 0.05
    # mnist.yaml: D's inputs kept with p 0.8, its hidden units with p 0.5; G's noise N(0, I), 100-d
    assert D.input_drop.p == 0.2 and D.drop.p == 0.5 and D.hidden[1].p == 0.5 and G.noise_kind == "gaussian"
    assert [type(m).__name__ for m in D.hidden] == ["Maxout", "Dropout", "Maxout"]
    assert [(m.units, m.pieces) for m in D.hidden if isinstance(m, gan.Maxout)] == [(240, 5)] * 2
    z = G.noise(6)
    x = G(z)
    assert z.shape == (6, 100) and x.shape == (6, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    D.eval()
    assert D(x).shape == (6,) and torch.equal(D(x), D(x))
    D.train()
    assert not torch.equal(D(x), D(x))  # dropout acts only in training
    mean = torch.rand(784)
    G.init_output_bias(mean)
    torch.testing.assert_close(torch.sigmoid(G.out.bias), mean.clamp(1e-3, 1 - 1e-3))
    u = gan.MLPGenerator(noise="uniform").noise(100_000)
    assert u.abs().max() <= math.sqrt(3) and u.var().item() == pytest.approx(1, abs=0.02)


def dcgan_sizes(z_dim: int, image_size: int, c: int, w: int) -> tuple[int, int]:
    """Hand count. G: z -> (8w, s, s) by a matrix, BatchNorm, then 5x5 transposed convolutions halving the
    channels up to w, and one to c; D mirrors it and ends in one linear unit. No biases (BatchNorm's shift
    replaces them); BatchNorm has a scale and a shift per channel."""
    start, stages = {64: (4, 4), 32: (4, 3), 28: (7, 2)}[image_size]
    chans = [w * 2 ** i for i in range(stages)][::-1]  # G: e.g. 1024, 512, 256, 128
    g = z_dim * chans[0] * start ** 2 + 2 * chans[0]
    g += sum(25 * a * b + 2 * b for a, b in zip(chans[:-1], chans[1:])) + 25 * chans[-1] * c
    rev = chans[::-1]  # D: 128, 256, 512, 1024
    d = 25 * c * rev[0] + sum(25 * a * b + 2 * b for a, b in zip(rev[:-1], rev[1:])) + rev[-1] * start ** 2
    return g, d


@pytest.mark.parametrize("size, c, w", [(64, 3, 128), (32, 3, 128), (32, 3, 64), (28, 1, 64)])
def test_dcgan_parameter_counts(size, c, w):
    with torch.device("meta"):  # count without allocating the 64x64 model's 36M numbers
        G, D = gan.DCGenerator(100, size, c, w), gan.DCDiscriminator(size, c, w)
    assert (n_params(G), n_params(D)) == dcgan_sizes(100, size, c, w)


@pytest.mark.parametrize("size, c, start", [(64, 3, 4), (32, 3, 4), (28, 1, 7)])
def test_dcgan_shapes(size, c, start):
    torch.manual_seed(0)
    G, D = gan.DCGenerator(100, size, c, width=8), gan.DCDiscriminator(size, c, width=8)
    z = G.noise(3)
    assert z.shape == (3, 100) and -1 <= z.min() and z.max() <= 1
    x = G(z)
    assert x.shape == (3, c, size, size) and -1 <= x.min() and x.max() <= 1 and x.std() > 0
    assert D(x).shape == (3,)
    G.eval(), D.eval()
    assert G(z).shape == (3, c, size, size) and D(x).shape == (3,)
    assert G.start == start
    # BatchNorm everywhere but G's output and D's input
    assert isinstance(G.net[-1], nn.Tanh) and isinstance(G.net[-2], nn.ConvTranspose2d)
    assert isinstance(D.net[0], nn.Conv2d) and isinstance(D.net[1], nn.LeakyReLU)
    assert D.net[1].negative_slope == 0.2
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in [*G.modules(), *D.modules()])
    with pytest.raises(UserError):
        gan.DCGenerator(image_size=30)


def layer_plan(modules) -> list:
    """Each layer as a short tuple: kind, channels in and out, kernel and stride (or BatchNorm's channels, the
    LeakyReLU's slope)."""
    plan = []
    for m in modules:
        if isinstance(m, nn.Linear):
            plan.append(("linear", m.in_features, m.out_features))
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            kind = "conv" if isinstance(m, nn.Conv2d) and not isinstance(m, nn.ConvTranspose2d) else "convT"
            plan.append((kind, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.bias is not None))
        elif isinstance(m, nn.BatchNorm2d):
            plan.append(("bn", m.num_features))
        elif isinstance(m, nn.LeakyReLU):
            plan.append(("lrelu", m.negative_slope))
        else:
            plan.append(type(m).__name__.lower())
    return plan


def test_dcgan_64x64_is_the_papers_layer_sequence_and_channel_plan():
    """Radford et al. 2015, Figure 1 and sec. 3: z (100) projected to 4 x 4 x 1024, then four fractionally-strided
    convolutions to 8 x 8 x 512, 16 x 16 x 256, 32 x 32 x 128 and 64 x 64 x 3; BatchNorm after every layer of G but
    its output (tanh) and every layer of D but its input; ReLU in G, LeakyReLU 0.2 in D; D's last map flattened into
    one output. 5 x 5 kernels, stride 2, no biases: the released code's."""
    torch.manual_seed(0)
    G, D = gan.DCGenerator(100, 64, 3, 128), gan.DCDiscriminator(64, 3, 128)
    # G's forward: project -> bn0 -> relu -> net (the ReLU after bn0 is F.relu in forward)
    assert layer_plan([G.project, G.bn0]) == [("linear", 100, 1024 * 4 * 4), ("bn", 1024)]
    assert layer_plan(G.net) == [("convT", 1024, 512, 5, 2, False), ("bn", 512), "relu",
                                 ("convT", 512, 256, 5, 2, False), ("bn", 256), "relu",
                                 ("convT", 256, 128, 5, 2, False), ("bn", 128), "relu",
                                 ("convT", 128, 3, 5, 2, False), "tanh"]
    assert layer_plan([*D.net, D.out]) == [("conv", 3, 128, 5, 2, False), ("lrelu", 0.2),
                                           ("conv", 128, 256, 5, 2, False), ("bn", 256), ("lrelu", 0.2),
                                           ("conv", 256, 512, 5, 2, False), ("bn", 512), ("lrelu", 0.2),
                                           ("conv", 512, 1024, 5, 2, False), ("bn", 1024), ("lrelu", 0.2),
                                           ("linear", 1024 * 4 * 4, 1)]
    maps = []  # the feature maps' shapes in a forward pass: the figure's 4x4x1024 -> ... -> 64x64x3, and back
    for m in [G.bn0, *G.net, *D.net]:
        if isinstance(m, (nn.BatchNorm2d, nn.Tanh)) or (m is D.net[1]):
            m.register_forward_hook(lambda mod, a, out: maps.append(tuple(out.shape[1:])) and None)
    with torch.no_grad():
        D(G(G.noise(2)))
    assert maps == [(1024, 4, 4), (512, 8, 8), (256, 16, 16), (128, 32, 32), (3, 64, 64),
                    (128, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4)]


def test_dcgan_init_statistics():
    # Radford et al. 2015, sec. 4: all weights from a zero-centred normal with standard deviation 0.02
    torch.manual_seed(0)
    G, D = gan.DCGenerator(100, 32, 3, 64), gan.DCDiscriminator(32, 3, 64)
    convs = torch.cat([m.weight.flatten() for net in (G, D) for m in net.modules()
                       if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))])
    bn_w = torch.cat([m.weight for net in (G, D) for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias for net in (G, D) for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert convs.mean().abs() < 1e-3 and convs.std().item() == pytest.approx(0.02, rel=0.02)
    assert bn_w.mean().item() == pytest.approx(1, abs=0.003) and bn_w.std().item() == pytest.approx(0.02, rel=0.15)
    assert bn_b.abs().max() == 0
    other = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4))
    gan.dcgan_init(other)
    assert other[0].bias.abs().max() == 0 and other[1].bias.abs().max() == 0
