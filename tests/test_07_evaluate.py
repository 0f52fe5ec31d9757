"""07's yardstick: the Frechet distance and KID against independent computations, and the classifier-feature
scores on real MNIST (real vs real near the floor, noise far, a collapsed generator visible)."""

import importlib
import json
import math
import sys

import pytest
import torch

from common import data
from common.errors import UserError

ev = importlib.import_module("milestones.07_vae_gan_diffusion.evaluate")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small matmuls in many threads crawl on a shared 2-core machine (15x slower for KID here): use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------------------------------------

def test_sqrtm_psd_squares_back():
    a = random_spd(20, 0)
    s = ev.sqrtm_psd(a)
    assert torch.allclose(s @ s, a, atol=1e-10)
    assert torch.allclose(s, s.T)
    singular = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64))  # rank-deficient: eigenvalue 0
    assert torch.allclose(ev.sqrtm_psd(singular), torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)))


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(1))
    mu, cov = ev.feature_stats(x)
    assert mu.dtype == cov.dtype == torch.float64 and cov.shape == (16, 16)
    assert abs(ev.frechet_distance(mu, cov, mu, cov)) < 1e-8 * float(cov.trace())


def test_frechet_distance_diagonal_closed_form():
    g = torch.Generator().manual_seed(2)
    mu1, mu2 = torch.randn(10, generator=g), torch.randn(10, generator=g)
    s1, s2 = torch.rand(10, generator=g) + 0.1, torch.rand(10, generator=g) + 0.1  # standard deviations
    expected = float((mu1 - mu2).pow(2).sum() + (s1 - s2).pow(2).sum())
    got = ev.frechet_distance(mu1, torch.diag(s1 ** 2), mu2, torch.diag(s2 ** 2))
    assert got == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_full_covariance_against_eigenvalues_of_c1_c2():
    # Tr (C1^1/2 C2 C1^1/2)^1/2 = sum sqrt(eigenvalues of C1 C2): a non-symmetric eigensolver, no square roots
    c1, c2 = random_spd(12, 3), random_spd(12, 4)
    mu1, mu2 = torch.zeros(12), torch.ones(12)
    cross = torch.linalg.eigvals(c1 @ c2).real.clamp(min=0).sqrt().sum()
    expected = float(12 + c1.trace() + c2.trace() - 2 * cross)
    assert ev.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
    assert ev.frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-8)  # symmetric
    # C2 = a C1 commutes with C1: the distance is (1 - sqrt a)^2 Tr C1; with a = 4 it is Tr C1
    assert ev.frechet_distance(mu1, c1, mu1, 4 * c1) == pytest.approx(float(c1.trace()), rel=1e-8)


# ---------------------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------------------

def test_kid_zero_for_one_distribution_positive_for_a_shift():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    mean, std = ev.kid(a, b, subsets=50, subset_size=500)
    assert abs(mean) < 0.5 * std
    mean_shift, std_shift = ev.kid(a, b + 0.5, subsets=50, subset_size=500)
    assert mean_shift > 10 * std_shift and mean_shift > 50 * abs(mean)


def test_kid_is_unbiased_its_mean_does_not_depend_on_subset_size():
    # The V-statistic (diagonals kept) is biased upwards by ~ (E k(x,x) - E k(x,x')) / m: large for m = 10.
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(4000, 4, generator=g), torch.randn(4000, 4, generator=g) + 0.3
    small, small_std = ev.kid(a, b, subsets=1000, subset_size=10)
    large, _ = ev.kid(a, b, subsets=20, subset_size=1000)
    assert small == pytest.approx(large, abs=4 * small_std / math.sqrt(1000))
    x, y = a[:10].double(), b[:10].double()
    k = ev.polynomial_kernel
    biased = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert float(biased - ev.mmd2_unbiased(x, y)) > 0.5 * large  # the bias the test above would catch


def test_polynomial_kernel_is_the_cubic_of_the_scaled_dot_product():
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0], [0.0, 0.0]])
    assert torch.allclose(ev.polynomial_kernel(x, y), torch.tensor([[(1 / 2 + 1) ** 3, 1.0]]))


# ---------------------------------------------------------------------------------------------------------
# The classifier and the scores, on real MNIST
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_clf(data_root, tmp_path_factory):
    """A 500-step LeNet-5 (98% on MNIST; at 300 steps, 97%, fewer than 90% of digits are classified confidently),
    trained into a cache of its own, so it never meets a user's cached classifier."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MILESTONES_CACHE", str(tmp_path_factory.mktemp("clf_cache")))
        first = ev.load_or_train_classifier("mnist", data_root, device="cpu", steps=500)
        mtime = first.path.stat().st_mtime_ns
        second = ev.load_or_train_classifier("mnist", data_root, device="cpu", steps=500)
        yield first, second, mtime


@pytest.fixture(scope="module")
def mnist(data_root):
    return data.load("mnist", data_root)


def test_classifier_trains_caches_and_reloads(mnist_clf):
    first, second, mtime = mnist_clf
    assert first.trained and not second.trained
    assert first.accuracy > 0.95 and second.accuracy == first.accuracy
    assert second.path == first.path and first.path.with_suffix(".json").is_file()
    assert first.path.stat().st_mtime_ns == mtime  # loaded, not written again
    assert "steps500" in first.path.name  # a short budget never poses as the default yardstick
    assert "cpu-fp32" in first.path.name and first.trained_as == "cpu-fp32"  # nor a classifier trained elsewhere
    assert ev.classifier_path("mnist", 500, torch.device("cuda")) != first.path  # (a GPU's trains in bf16)
    assert json.loads(first.path.with_suffix(".json").read_text())["trained_as"] == "cpu-fp32"
    for k, v in first.net.state_dict().items():
        assert torch.equal(v, second.net.state_dict()[k])


def test_features_and_probabilities(mnist_clf, mnist):
    clf = mnist_clf[1]
    x = mnist["test"][0][:70].float() / 255  # (70, 1, 28, 28) in [0, 1]
    f, p = ev.features(clf, x, batch_size=32), ev.probabilities(clf, x, batch_size=32)
    assert f.shape == (70, 84) and p.shape == (70, 10)
    assert torch.allclose(p.sum(1), torch.ones(70), atol=1e-5)
    assert torch.allclose(f[:5], ev.features(clf, x[:5]), atol=1e-5)  # batching does not change a feature
    assert (p.argmax(1) == mnist["test"][1][:70]).float().mean() > 0.9
    with pytest.raises(UserError, match="28"):
        ev.features(clf, torch.rand(4, 3, 32, 32))
    with pytest.raises(UserError, match=r"\(x \+ 1\) / 2"):
        ev.features(clf, x * 2 - 1)


def test_real_digits_score_near_the_floor(mnist_clf, mnist):
    clf = mnist_clf[1]
    pick = torch.randperm(60000, generator=torch.Generator().manual_seed(1))[:1000]  # MNIST's order is not random
    real = mnist["train"][0][pick].float() / 255
    s = ev.score_samples(real, "mnist", n=1000, classifier=clf, kid_subsets=20)
    assert s["n"] == 1000 and s["fcd_real"] > 0
    assert s["fcd"] == pytest.approx(s["fcd_real"], rel=0.5)  # two real draws at n = 1000 differ by ~30%
    assert abs(s["kid"] - s["kid_real"]) < 3 * max(s["kid_std"], s["kid_real_std"])
    assert s["confident_fraction"] > 0.9
    assert s["class_entropy"] > 2.25 and s["class_entropy_real"] > 2.25  # log 10 = 2.303

    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    s_noise = ev.score_samples(noise, "mnist", n=1000, classifier=clf, kid_subsets=20)
    assert s_noise["fcd"] > 20 * s["fcd_real"] and s_noise["kid"] > 20 * abs(s["kid_real"])
    assert s_noise["confident_fraction"] < 0.5
    assert s_noise["fcd_real"] == pytest.approx(s["fcd_real"])  # the floor does not depend on the samples


def test_real_images_are_the_test_images_the_scores_compare_against(mnist_clf, data_root):
    """--inception-fid takes its real images from real_images: the very test images of the classifier's FCD."""
    real = ev.real_images("mnist", data_root, 300, seed=3)
    assert real["test"].shape == real["train"].shape == (300, 1, 28, 28) and real["test"].dtype == torch.uint8
    assert torch.equal(real["test"], ev.real_images("mnist", data_root, 300, seed=3)["test"])
    assert not torch.equal(real["test"], ev.real_images("mnist", data_root, 300, seed=4)["test"])
    s = ev.score_samples(real["test"].float() / 255, "mnist", data_root, n=300, classifier=mnist_clf[1], seed=3,
                         kid_subsets=10)
    assert s["fcd"] == pytest.approx(0.0, abs=1e-3) and s["fcd_real"] > 1.0  # the same set, not another draw


def test_kid_is_the_plain_mmd2_over_subsets_of_half_the_samples(mnist_clf, mnist, monkeypatch):
    """score_samples' KID: 100 subsets (by default) of min(1000, n // 2) a side, 500 at the quick presets' n = 1,000,
    and the value is kid()'s own, unscaled (no factor of 10^3)."""
    clf, sizes, kid = mnist_clf[1], [], ev.kid
    monkeypatch.setattr(ev, "kid", lambda a, b, subsets, size, seed: sizes.append((subsets, size)) or
                        kid(a, b, subsets, size, seed))
    x = mnist["test"][0][:2400].float() / 255
    for n in (300, 1000, 2400):
        s = ev.score_samples(x[:n], "mnist", n=n, classifier=clf, kid_subsets=3)
        real = ev.features(clf, ev.real_images("mnist", None, n, 0)["test"].float() / 255)
        assert s["kid"] == pytest.approx(kid(real, ev.features(clf, x[:n]), 3, min(1000, n // 2), 0)[0], rel=1e-9)
    assert sizes == [(3, 150)] * 2 + [(3, 500)] * 2 + [(3, 1000)] * 2  # the samples' KID, then real vs real
    assert sizes and ev.score_samples.__defaults__[-2:] == (100, 1000)  # kid_subsets, kid_subset_size


def test_mode_collapse_shows_in_the_class_entropy(mnist_clf, mnist):
    one = mnist["test"][0][:1].float() / 255
    s = ev.score_samples(one.repeat(64, 1, 1, 1), "mnist", n=64, classifier=mnist_clf[1], kid_subsets=10)
    assert s["n"] == 64 and s["class_entropy"] < 0.01 and s["class_entropy_real"] > 1.8
    assert s["fcd"] > 5 * s["fcd_real"]


def test_cifar_classifier_code_path_on_synthetic_images():
    """ResNet-20's recipe runs (crops, flips, SGD) and its features are what its fc layer reads. The real
    CIFAR-10 training is a GPU job and is not run here."""
    g = torch.Generator().manual_seed(0)
    fake = lambda n: (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),  # noqa: E731
                      torch.randint(0, 10, (n,), generator=g))
    clf = ev.Classifier("cifar10")
    info = ev.train_classifier(clf, {"train": fake(128), "test": fake(16)}, steps=1)
    assert info["steps"] == 1 and 0 <= info["test_accuracy"] <= 1 and not clf.training
    x = torch.rand(5, 3, 32, 32, generator=g)
    assert ev.features(clf, x).shape == (5, 64)
    with torch.no_grad():
        prepared = clf.prepare(x)
        assert torch.allclose(clf.head(clf.penultimate(prepared)), clf.net(prepared), atol=1e-5)


def test_lenet_features_are_f6_and_building_leaves_the_callers_random_state_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    clf = ev.Classifier("mnist").eval()
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(ev.Classifier("mnist").net.c1.weight, clf.net.c1.weight)  # seeded: always the same start
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        prepared = clf.prepare(x)
        assert prepared.shape == (3, 1, 32, 32)
        assert torch.allclose(clf.head(clf.penultimate(prepared)), clf.net(prepared))
    assert ev.features(clf, x).shape == (3, 84)


# ---------------------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------------------

def test_no_cache_and_no_data_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MILESTONES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MILESTONES_OFFLINE", "1")
    empty = tmp_path / "data"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        ev.load_or_train_classifier("mnist", empty, device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("classifier FID needs a classifier for mnist: none cached at ")
    assert "train-images-idx3-ubyte.gz" in msg


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="cifar10"):
        ev.Classifier("svhn")


def test_inception_fid_without_torchmetrics(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import torchmetrics now fails, installed or not
    monkeypatch.setitem(sys.modules, "torchmetrics.image", None)
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(UserError) as e:
        ev.inception_fid(x, x)
    assert str(e.value) == ev.INCEPTION_MISSING and "\n" not in str(e.value)
