"""One yardstick for every generator of this milestone (VAE, GAN, DCGAN, DDPM), computed offline.

FID (Heusel et al. 2017) compares Gaussians fitted to Inception-v3 features of real and generated images. Those
weights cannot be fetched everywhere, so we compute the same two-sample statistics on the penultimate features
of a classifier this course trains on the same dataset (TF-GAN calls FID with a domain classifier the
"Frechet Classifier Distance"):

    FCD = ||mu_r - mu_g||^2 + Tr(C_r + C_g - 2 (C_r^1/2 C_g C_r^1/2)^1/2)              (Frechet / W2 distance)
    KID = unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, averaged over subsets           (Binkowski et al. 2018)

KID is stored and printed as the plain MMD^2, not scaled by 10^3 (LeNet-5's unnormalised features make it tens to
hundreds for a generator); `score_samples` averages it over 100 subsets of min(1000, n // 2) images a side, 500 at
the n = 1,000 of the quick presets.

    mnist, fashion_mnist   02's LeNet-5 with its modern options (ReLU, max-pool, full C3, softmax): F6, 84-d
    cifar10                04's ResNet-20: the global-average-pooled 64-d input of its fc layer

The numbers are comparable between runs of this course, never with published (Inception) FIDs. Both are biased
upwards at small N, so `score_samples` always reports the same metrics between two disjoint sets of real
images as the floor a perfect generator would reach.
"""

import importlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import data
from common.data.augment import normalize, random_crop, random_hflip
from common.data.cifar import MEAN, STD
from common.device import pick_device
from common.errors import UserError

# Reuse across milestones, on purpose: the feature extractors are 02's LeNet-5 and 04's ResNet-20, classifiers
# this course built and measured. Their folders start with digits, so `import` statements cannot name them.
lenet = importlib.import_module("milestones.02_cnn_lenet.model")
lenet_inputs = importlib.import_module("milestones.02_cnn_lenet.inputs")
resnet = importlib.import_module("milestones.04_resnet.model")

VERSION = "v1"  # bump when the architecture or the recipe changes: old cached weights are then ignored

# Training recipes; steps is the default budget (LeNet-5: 2,000 steps, 4.3 epochs of MNIST; ResNet-20: 30 epochs
# of CIFAR-10, a GPU job). A run's card records the classifier's test accuracy.
RECIPES = {
    "mnist": dict(arch="lenet5", shape=(1, 28, 28), steps=2000, batch=128, lr=3e-3, optimizer="adam"),
    "fashion_mnist": dict(arch="lenet5", shape=(1, 28, 28), steps=3000, batch=128, lr=3e-3, optimizer="adam"),
    "cifar10": dict(arch="resnet20", shape=(3, 32, 32), steps=11700, batch=128, lr=0.1, optimizer="sgd"),
}


# ---------------------------------------------------------------------------------------------------------
# The statistics
# ---------------------------------------------------------------------------------------------------------

def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix: V diag(sqrt(w)) V^T from a = V diag(w) V^T.
    Eigenvalues that rounding made slightly negative are clamped to 0."""
    a = torch.as_tensor(a, dtype=torch.float64)
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), in float64: the squared 2-Wasserstein distance
    between N(mu1, C1) and N(mu2, C2) (Dowson & Landau 1982). The inner product is symmetric PSD, so both roots
    come from an eigendecomposition."""
    mu1, cov1, mu2, cov2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, cov1, mu2, cov2))
    s1 = sqrtm_psd(cov1)
    cross = sqrtm_psd(s1 @ cov2.to(s1.device) @ s1)  # (C1^1/2 C2 C1^1/2)^1/2
    return float((mu1 - mu2.to(mu1.device)).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross.trace())


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu (d,), cov (d, d)) of features (N, d), float64, covariance with 1/(N-1)."""
    x = torch.as_tensor(features, dtype=torch.float64)
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / max(len(x) - 1, 1)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / d + 1)^3 for every pair: (n, d), (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MMD_u^2 = sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum_{i,j} k(x_i,y_j)/m^2
    (Gretton et al. 2012, eq. 3): dropping the diagonals makes it unbiased, so it can be negative."""
    m = len(x)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    same = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return same - 2 * kxy.mean()


def kid(feat_real, feat_fake, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (here on classifier features): (mean, std) of MMD_u^2 over `subsets` random
    subsets of `subset_size` (capped at the smaller set) drawn without replacement from each set. The estimate
    is unbiased at any subset size, so the size only sets the spread; a size >= both sets makes every subset
    the whole set (std 0)."""
    x = torch.as_tensor(feat_real, dtype=torch.float64)
    y = torch.as_tensor(feat_fake, dtype=torch.float64).to(x.device)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise UserError(f"KID needs at least 2 samples in each set, got {len(x)} and {len(y)}")
    g = torch.Generator().manual_seed(seed)
    values = torch.stack([mmd2_unbiased(x[torch.randperm(len(x), generator=g)[:m].to(x.device)],
                                        y[torch.randperm(len(y), generator=g)[:m].to(x.device)])
                          for _ in range(subsets)])
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0


# ---------------------------------------------------------------------------------------------------------
# The classifier whose features we measure in
# ---------------------------------------------------------------------------------------------------------

class Classifier(nn.Module):
    """A trained classifier seen as a feature extractor. Takes images as the generators make them: float in
    [0, 1], shaped like the dataset, (B, 1, 28, 28) or (B, 3, 32, 32). Built from seed 0 (the caller's random
    state is left as it was)."""

    def __init__(self, dataset: str):
        super().__init__()
        if dataset not in RECIPES:
            raise UserError(f"classifier FID is defined for {', '.join(RECIPES)}; got {dataset!r}")
        self.dataset, self.recipe = dataset, RECIPES[dataset]
        self.arch, self.shape = self.recipe["arch"], self.recipe["shape"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if self.arch == "lenet5":
                self.net = lenet.LeNet5(activation="relu", pool="max", c3="full", output="softmax")
                he_init_(self.net)
            else:
                self.net = resnet.resnet_cifar(20)  # already He-initialised, as the paper does
        self.accuracy, self.trained, self.path = float("nan"), False, None  # set by load_or_train_classifier
        self.trained_as = None  # "cpu-fp32" / "cuda-bf16": which yardstick this is

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the input scaling the classifier was trained on."""
        if self.arch == "lenet5":  # 28x28 padded to LeNet-5's 32x32 field (background 0), then 02's scaling
            return lenet_inputs.scale_1998(lenet_inputs.pad_to_32(x))  # (B, 1, 32, 32)
        return normalize(x, MEAN, STD)  # (B, 3, 32, 32), as 04 trains

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared input -> LeNet-5's F6 state (B, 84) or ResNet-20's globally pooled last block (B, 64)."""
        if self.arch == "lenet5":
            return self.net.features(x)
        return self.net.blocks(self.net.stem(x)).mean((2, 3))  # what ResNet.forward feeds its fc layer

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return (self.net.head if self.arch == "lenet5" else self.net.fc)(h)  # (B, 10) logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


def he_init_(net: nn.Module) -> None:
    """He et al. 2015 normal init, zero biases. LeCun's uniform +-2.4/F suits his scaled tanh; with ReLU units
    it starts so small that the 300-step test budget ends at 93% instead of 97%."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, lenet.SparseConv2d):  # C3: every output map sees all 6 input maps ("full")
            nn.init.normal_(m.weight, 0.0, math.sqrt(2 / (int(m.table.sum(1)[0]) * m.k * m.k)))
            nn.init.zeros_(m.bias)


def trained_as(device: torch.device) -> str:
    """How train_classifier trains on `device`: bf16 autocast on a GPU, fp32 elsewhere. Classifiers trained
    differently are different yardsticks, so scores name (and the cache keys) which one measured them."""
    return "cuda-bf16" if device.type == "cuda" else f"{device.type}-fp32"


def classifier_path(dataset: str, steps: int | None = None, device: torch.device | None = None) -> Path:
    """cache_dir()/classifiers/<dataset>-<arch>-<version>-<device>-<precision>[-steps<N>].pt. A non-default
    budget gets a file of its own, so a short test run never passes for the real yardstick, and so does a
    classifier trained on another kind of device or in another precision."""
    recipe = RECIPES[dataset]
    budget = "" if steps in (None, recipe["steps"]) else f"-steps{steps}"
    kind = trained_as(device if device is not None else torch.device("cpu"))
    return data.cache_dir() / "classifiers" / f"{dataset}-{recipe['arch']}-{VERSION}-{kind}{budget}.pt"


def load_or_train_classifier(dataset: str, data_dir=None, device="auto", steps: int | None = None) -> Classifier:
    """The cached classifier for `dataset`, trained and cached first if there is none. `.trained` says which
    happened, `.accuracy` is its test accuracy, `.path` its weights (with a JSON record beside them)."""
    clf = Classifier(dataset)
    device = pick_device(device or "auto") if device is None or isinstance(device, str) else torch.device(device)
    path = classifier_path(dataset, steps, device)
    clf.trained_as = trained_as(device)
    if path.is_file():
        try:
            clf.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            clf.accuracy = json.loads(path.with_suffix(".json").read_text())["test_accuracy"]
            clf.path = path
            return clf.to(device).eval()
        except Exception:  # a damaged or foreign cache entry is trained again, never fatal
            path.unlink(missing_ok=True)
    try:
        splits = data.load(dataset, data_dir)
    except UserError as e:
        raise UserError(f"classifier FID needs a classifier for {dataset}: none cached at {path}, and the data to "
                        f"train one is missing: {one_line(e)}") from None
    info = train_classifier(clf.to(device), splits, steps or clf.recipe["steps"])
    _save(clf, path, info)
    clf.accuracy, clf.trained, clf.path = info["test_accuracy"], True, path
    return clf


def one_line(error: Exception) -> str:
    """A data loader's multi-line message ('files are missing:' and one indented line per file) as one line."""
    lines = str(error).splitlines()
    items = [line.split("  (")[0].strip() for line in lines[1:] if line.startswith(" ")]
    if not items:
        return " ".join(str(error).split())
    return f"{lines[0]} {items[0]}" + (f" and {len(items) - 1} more" if len(items) > 1 else "")


def train_classifier(clf: Classifier, splits: dict, steps: int) -> dict:
    """A short plain loop: cross-entropy, cosine-decayed learning rate; Adam for LeNet-5, SGD with Nesterov
    momentum plus crops and flips for ResNet-20. Seeded; returns the JSON record (test accuracy, time)."""
    recipe, device = clf.recipe, next(clf.parameters()).device
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    print(f"training the {clf.arch} feature classifier for {clf.dataset} once ({steps} steps on {device.type}); "
          f"it is cached afterwards", file=sys.stderr)
    start = time.perf_counter()
    if recipe["optimizer"] == "adam":
        opt = torch.optim.Adam(clf.parameters(), lr=recipe["lr"])
    else:
        opt = torch.optim.SGD(clf.parameters(), lr=recipe["lr"], momentum=0.9, weight_decay=5e-4, nesterov=True)
    loader = data.TensorLoader(x_train, y_train, batch_size=recipe["batch"], shuffle=True, drop_last=True,
                               device=device)
    clf.train()
    step, epoch = 0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)  # the crops and flips
        while step < steps:
            for x, y in loader.batches(epoch):
                if step == steps:
                    break
                for group in opt.param_groups:
                    group["lr"] = recipe["lr"] * 0.5 * (1 + math.cos(math.pi * step / steps))
                x = x.to(device, non_blocking=True).float().div_(255)  # uint8 -> [0, 1]
                if clf.arch == "resnet20":
                    x = random_hflip(random_crop(x, 32, padding=4))
                with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                    logits = clf(clf.prepare(x))
                loss = F.cross_entropy(logits.float(), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            epoch += 1
    clf.eval()
    seconds = time.perf_counter() - start
    predicted = probabilities(clf, x_test.float().div_(255)).argmax(1)
    accuracy = float((predicted == y_test).float().mean())
    print(f"  test accuracy {accuracy:.2%} after {seconds:.0f} s", file=sys.stderr)
    return dict(dataset=clf.dataset, arch=clf.arch, version=VERSION, steps=steps, test_accuracy=accuracy,
                train_seconds=round(seconds, 1), device=device.type, trained_as=trained_as(device),
                torch=torch.__version__)


def _save(clf: Classifier, path: Path, info: dict) -> None:
    """The weights and their JSON record, each written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.cpu() for k, v in clf.net.state_dict().items()}
    for target, write in ((path, lambda f: torch.save(state, f)),
                          (path.with_suffix(".json"), lambda f: f.write(json.dumps(info, indent=1).encode()))):
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)


@torch.no_grad()
def _run(clf: Classifier, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, d), probabilities (N, 10)), float32 on the CPU, where the float64 statistics run."""
    images = check_images(images, clf)
    device = next(clf.parameters()).device
    was_training = clf.training
    clf.eval()
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        h = clf.penultimate(clf.prepare(images[i:i + batch_size].to(device, non_blocking=True)))
        probs.append(F.softmax(clf.head(h).float(), dim=1).cpu())
        feats.append(h.float().cpu())
    clf.train(was_training)
    return torch.cat(feats), torch.cat(probs)


def features(classifier: Classifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Penultimate-layer features (N, d) of [0, 1] images (N, C, H, W), batched, without gradients."""
    return _run(classifier, images, batch_size)[0]


def probabilities(classifier: Classifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Softmax class probabilities (N, 10) of [0, 1] images."""
    return _run(classifier, images, batch_size)[1]


def check_images(images: torch.Tensor, clf: Classifier) -> torch.Tensor:
    """Float [0, 1] images shaped like the dataset (uint8 is accepted and scaled); anything else is a UserError."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != clf.shape:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UserError(f"{clf.dataset} samples must be a (N, {', '.join(map(str, clf.shape))}) tensor, got {got}")
    if images.dtype == torch.uint8:
        return images.float().div(255)
    images = images.float()
    lo, hi = float(images.min()), float(images.max())
    if lo < -0.01 or hi > 1.01:
        raise UserError(f"samples must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}] (map tanh outputs in "
                        f"[-1, 1] with (x + 1) / 2)")
    return images.clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------
# Scoring a generator
# ---------------------------------------------------------------------------------------------------------

def class_entropy(probs: torch.Tensor) -> float:
    """Entropy in nats of the histogram of predicted classes: log(10) = 2.303 when every class is drawn equally
    often, 0 when every sample is the same class (mode collapse)."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum()) + 0.0  # + 0.0: one class gives 0, not -0


def confident_fraction(probs: torch.Tensor, threshold: float = 0.9) -> float:
    """Share of images the classifier puts in one class with probability >= threshold."""
    return float((probs.max(1).values >= threshold).float().mean())


_REAL = {}  # (weights file, data root, n, seed) -> features and probabilities of the real test and train images


def real_images(dataset: str, data_dir, n: int, seed: int) -> dict:
    """The real images every score compares against: n test and n training images (uint8), drawn with `seed`."""
    try:
        splits = data.load(dataset, data_dir)
    except UserError as e:
        raise UserError(f"scoring samples needs the real {dataset} images: {one_line(e)}") from None
    g = torch.Generator().manual_seed(seed)
    return {split: splits[split][0][torch.randperm(len(splits[split][0]), generator=g)[:n]]
            for split in ("test", "train")}  # test first: the draws of the generator are fixed by that order


def _real_features(clf: Classifier, data_dir, n: int, seed: int):
    key = (str(clf.path), str(data_dir), n, seed)
    if clf.path is None or key not in _REAL:
        out = [_run(clf, x, 500) for x in real_images(clf.dataset, data_dir, n, seed).values()]
        if clf.path is None:
            return out
        _REAL[key] = out
    return _REAL[key]


def score_samples(samples: torch.Tensor, dataset: str, data_dir=None, n: int = 10000, classifier=None,
                  device="auto", seed: int = 0, kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict:
    """Score n generated [0, 1] images against n real test images in the classifier's feature space.

    fcd, kid, kid_std          the generated images vs the real test images; kid is the plain MMD^2 (no 10^3
                               scaling), averaged over kid_subsets subsets of min(kid_subset_size, n // 2)
    fcd_real, kid_real, ...    n real training images vs the same test images: the floor at this n
    confident_fraction         share of samples classified with max probability >= 0.9 (sharp, recognisable)
    class_entropy              entropy (nats) of the predicted-class histogram; log 10 = 2.303 is full coverage
    (and the last two for the real test images, `*_real`, as the reference)
    """
    clf = classifier or load_or_train_classifier(dataset, data_dir, device)
    if clf.dataset != dataset:
        raise UserError(f"the classifier given was trained on {clf.dataset}, not {dataset}")
    n = min(n, len(samples), 10000)
    if n < 4:
        raise UserError(f"scoring needs at least 4 samples, got {len(samples)}")
    f_fake, p_fake = _run(clf, samples[:n], 500)
    (f_test, p_test), (f_train, _) = _real_features(clf, data_dir, n, seed)
    n = min(n, len(f_test))
    f_fake, p_fake = f_fake[:n], p_fake[:n]
    mu_test, cov_test = feature_stats(f_test)
    m = min(kid_subset_size, n // 2)  # subsets smaller than the sets, so kid_std measures something
    kid_fake = kid(f_test, f_fake, kid_subsets, m, seed)
    kid_real = kid(f_test, f_train, kid_subsets, m, seed)
    return dict(
        n=n, dataset=dataset, classifier="-".join(filter(None, (clf.arch, VERSION, clf.trained_as))),
        classifier_accuracy=clf.accuracy,
        fcd=frechet_distance(*feature_stats(f_fake), mu_test, cov_test), kid=kid_fake[0], kid_std=kid_fake[1],
        fcd_real=frechet_distance(*feature_stats(f_train), mu_test, cov_test), kid_real=kid_real[0],
        kid_real_std=kid_real[1],
        confident_fraction=confident_fraction(p_fake), class_entropy=class_entropy(p_fake),
        confident_fraction_real=confident_fraction(p_test), class_entropy_real=class_entropy(p_test),
    )


# ---------------------------------------------------------------------------------------------------------
# Inception FID, for those who have the weights
# ---------------------------------------------------------------------------------------------------------

INCEPTION_MISSING = ("Inception FID needs torchmetrics and its Inception weights (pip install torchmetrics[image]; "
                     "first use downloads them) — not available here")


def inception_metric():
    """torchmetrics' FrechetInceptionDistance (2048-d pool features), or a one-line UserError when torchmetrics or
    its Inception weights are not there (constructing it loads, or downloads, the weights)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        return FrechetInceptionDistance(feature=2048, normalize=True)
    except Exception:  # not installed, torch-fidelity missing, or the weights cannot be downloaded
        raise UserError(INCEPTION_MISSING) from None


def inception_fid(real: torch.Tensor, fake: torch.Tensor, batch_size: int = 100) -> float:
    """The published FID (Heusel et al. 2017) through torchmetrics, if it and its weights are available: [0, 1]
    images of any size (grey images are repeated to three channels; torchmetrics resizes to 299x299)."""
    metric = inception_metric().to(real.device)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].float().clamp(0, 1)
            metric.update(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, real=is_real)
    return float(metric.compute())
