"""03_alexnet: the 2012 architecture (counts, shapes, LRN, grouped convolutions, init), its data pipeline,
the CIFAR-10 and ImageNet paths, the experiments and the CLI contract."""

import ast
import importlib
import json
from pathlib import Path

import pytest
import torch

from common.device import Runtime, count_params
from common.loop import evaluate_classifier
from tests.conftest import only_run_dir, read_metrics, read_summary

model_mod = importlib.import_module("milestones.03_alexnet.model")
data_mod = importlib.import_module("milestones.03_alexnet.data")
figures = importlib.import_module("milestones.03_alexnet.figures")
train = importlib.import_module("milestones.03_alexnet.train")
experiments = importlib.import_module("milestones.03_alexnet.experiments")
recipe = importlib.import_module("milestones.03_alexnet.recipe")
AlexNet, LRN = model_mod.AlexNet, model_mod.LRN


# ---------------------------------------------------------------------------------------------------------
# the architecture
# ---------------------------------------------------------------------------------------------------------

def test_parameter_count_is_the_2012_networks_exactly():
    net = model_mod.alexnet()
    per_layer = [sum(p.numel() for p in m.parameters()) for m in net.convs + net.fcs]
    # conv1 96x3x11x11; conv2 256x48x5x5 (one GPU's half); conv3 384x256x3x3 (crosses); conv4 384x192x3x3;
    # conv5 256x192x3x3; fc6 9216 -> 4096; fc7 4096 -> 4096; fc8 4096 -> 1000 (weights + biases)
    assert per_layer == [34_944, 307_456, 885_120, 663_936, 442_624, 37_752_832, 16_781_312, 4_097_000]
    # the summary cards count trainable parameters; every one of AlexNet's is, so that is the paper's count
    assert all(p.requires_grad for p in net.parameters()) and not list(net.buffers())
    assert count_params(net) == model_mod.paper_param_count() == 60_965_224
    assert count_params(model_mod.alexnet(groups=1)) == 60_965_224 + 1_413_120  # conv2/4/5 un-split


def test_cifar_variant_parameter_count_worked_out_by_hand():
    # width 1: conv1 5x5x3 -> 64; conv2 5x5x(64/2) -> 128 (grouped); conv3 3x3x128 -> 192; conv4 3x3x(192/2) -> 192
    # (grouped); conv5 3x3x(192/2) -> 128 (grouped); fc6 128*4*4 -> 1024; fc7 1024 -> 1024; fc8 1024 -> 10
    by_hand = [64 * 3 * 25 + 64, 128 * 32 * 25 + 128, 192 * 128 * 9 + 192, 192 * 96 * 9 + 192, 128 * 96 * 9 + 128,
               2048 * 1024 + 1024, 1024 * 1024 + 1024, 1024 * 10 + 10]
    net = model_mod.alexnet_cifar()
    assert [sum(p.numel() for p in m.parameters()) for m in net.convs + net.fcs] == by_hand
    assert count_params(net) == sum(by_hand) == 3_763_594  # the number NOTES.md gives
    # the quick preset's half width: 32, 64, 96, 96, 64 maps and 512-unit fc layers
    half = [32 * 3 * 25 + 32, 64 * 16 * 25 + 64, 96 * 64 * 9 + 96, 96 * 48 * 9 + 96, 64 * 48 * 9 + 64,
            1024 * 512 + 512, 512 * 512 + 512, 512 * 10 + 10]
    quick = recipe.build_model(_preset("cifar", "quick"), 10)
    assert count_params(quick) == sum(half) == 945_354
    # without the split conv2, conv4 and conv5 see all maps: twice their weights
    assert count_params(model_mod.alexnet_cifar(groups=1)) == sum(by_hand) + 128 * 32 * 25 + 192 * 96 * 9 + 128 * 96 * 9


def test_layer_order_is_relu_then_lrn_then_pool_in_conv1_and_conv2():
    """Section 3.5: "Response-normalization layers follow the first and second convolutional layers. Max-pooling
    layers ... follow both response-normalization layers as well as the fifth convolutional layer. The ReLU
    non-linearity is applied to the output of every convolutional and fully-connected layer." """
    for net in (model_mod.alexnet(), model_mod.alexnet_cifar()):
        kinds = [[type(m).__name__ for m in block] for block in net.features]
        assert kinds == [["Conv2d", "ReLU", "LRN", "MaxPool2d"], ["Conv2d", "ReLU", "LRN", "MaxPool2d"],
                         ["Conv2d", "ReLU"], ["Conv2d", "ReLU"], ["Conv2d", "ReLU", "MaxPool2d"]]
        assert all((block[-1].kernel_size, block[-1].stride) == (3, 2) for block in net.features
                   if isinstance(block[-1], torch.nn.MaxPool2d))  # overlapping: z = 3, s = 2
        assert [type(m).__name__ for m in net.classifier] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU",
                                                             "Dropout", "Linear"]  # dropout on fc6/fc7 outputs
    # and the order is what the forward pass computes: pool(LRN(relu(conv(x)))), not LRN after the pool
    torch.manual_seed(0)
    net = model_mod.alexnet_cifar(channels=(8, 8, 8, 8, 8), hidden=16).eval()
    net.modern_init()
    conv, _, lrn, pool = net.features[0]
    x = 30 * torch.randn(2, 3, 32, 32)  # large activations, so LRN's denominator varies and the orders differ
    y = net.features[0](x)
    torch.testing.assert_close(y, pool(lrn(torch.relu(conv(x)))))
    for wrong in (lrn(pool(torch.relu(conv(x)))), pool(torch.relu(lrn(conv(x))))):
        assert (wrong - y).abs().max() > 1e-2 * y.abs().max()


def test_shapes_at_227_and_32():
    net = model_mod.alexnet().eval()
    sizes, x = [], torch.randn(2, 3, 227, 227)
    for block in net.features:
        x = block[0](x)
        sizes.append(x.shape[-1])  # right after the convolution
        x = block[1:](x)
    assert sizes == [55, 27, 13, 13, 13] and x.shape == (2, 256, 6, 6)
    assert net(torch.randn(2, 3, 227, 227)).shape == (2, 1000)
    cifar = model_mod.alexnet_cifar().eval()
    assert cifar.feature_shape == (128, 4, 4) and cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # z=2 pooling keeps the same map sizes, so only the overlap differs between the two designs
    assert model_mod.alexnet_cifar(pool_kernel=2).feature_shape == (128, 4, 4)
    assert model_mod.alexnet(pool_kernel=2).feature_shape == (256, 6, 6)


def test_layers_are_section_3_5s_kernels_strides_and_gpu_split():
    net = model_mod.alexnet()
    # Krizhevsky et al. 2012, sec. 3.5: 96 kernels 11x11x3 at stride 4; 256 of 5x5x48; 384 of 3x3x256; 384 of
    # 3x3x192; 256 of 3x3x192; fully connected layers of 4096, 4096 and 1000 neurons
    assert [tuple(c.weight.shape) for c in net.convs] == [(96, 3, 11, 11), (256, 48, 5, 5), (384, 256, 3, 3),
                                                          (384, 192, 3, 3), (256, 192, 3, 3)]
    assert [c.stride for c in net.convs] == [(4, 4)] + [(1, 1)] * 4
    assert [c.padding for c in net.convs] == [(0, 0), (2, 2), (1, 1), (1, 1), (1, 1)]  # keep 27 and 13 (Figure 2)
    # sec. 3.2: conv2, conv4 and conv5 see only their own GPU's maps; conv3 and the fc layers see both
    assert [c.groups for c in net.convs] == [1, 2, 1, 2, 2]
    assert [tuple(f.weight.shape) for f in net.fcs] == [(4096, 256 * 6 * 6), (4096, 4096), (1000, 4096)]


@pytest.mark.parametrize("experiment", ["imagenet", "cifar"])
def test_every_lrn_of_the_paper_nets_has_section_3_3s_constants(experiment):
    net = recipe.build_model(_preset(experiment, "paper"), 10)  # the net a paper run trains
    lrns = [m for m in net.modules() if isinstance(m, LRN)]
    assert len(lrns) == 2 and all(m.groups == 2 for m in lrns)  # after conv1 and conv2 (sec. 3.5), per GPU
    for m in lrns:  # sec. 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75; torch divides alpha by n, so alpha * n
        assert (m.norm.size, m.norm.k, m.norm.beta) == (5, 2.0, 0.75)
        assert m.norm.alpha == pytest.approx(5 * 1e-4, rel=1e-12)


def test_lrn_is_the_papers_formula_on_a_hand_computed_tensor():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], dtype=torch.float64).view(1, 7, 1, 1)
    b = LRN()(a).flatten()  # k=2, n=5, alpha=1e-4, beta=0.75
    sq = [1, 4, 9, 16, 25, 36, 49]
    windows = [sq[0:3], sq[0:4], sq[0:5], sq[1:6], sq[2:7], sq[3:7], sq[4:7]]  # i-2..i+2 clipped at the ends
    hand = [(i + 1) / (2 + 1e-4 * sum(w)) ** 0.75 for i, w in enumerate(windows)]
    torch.testing.assert_close(b, torch.tensor(hand, dtype=torch.float64), rtol=1e-12, atol=0)
    # the same torch module with alpha left unmapped is measurably different: the mapping matters
    unmapped = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a).flatten()
    assert (unmapped - b).abs().max() > 1e-5


def test_lrn_mapping_matches_the_literal_formula_for_any_constants():
    torch.manual_seed(0)
    a = torch.randn(2, 12, 3, 4, dtype=torch.float64) * 10
    for n, k, alpha, beta in ((5, 2.0, 1e-4, 0.75), (3, 1.0, 0.1, 0.5), (7, 0.5, 0.02, 1.0)):
        torch.testing.assert_close(LRN(n, k, alpha, beta)(a), model_mod.paper_lrn(a, n, k, alpha, beta),
                                   rtol=1e-10, atol=1e-12)


def test_lrn_stays_within_each_gpus_maps():
    a = torch.rand(1, 8, 2, 2, dtype=torch.float64) + 1
    b = LRN(alpha=0.5, groups=2)(a)
    torch.testing.assert_close(b[:, :4], model_mod.paper_lrn(a[:, :4], alpha=0.5))
    torch.testing.assert_close(b[:, 4:], model_mod.paper_lrn(a[:, 4:], alpha=0.5))
    assert not torch.allclose(b, model_mod.paper_lrn(a, alpha=0.5))  # one window across all 8 maps differs


def _depends_on(conv: torch.nn.Conv2d) -> torch.Tensor:
    """(out, in) boolean: does output map o depend on input map i?"""
    x = torch.randn(1, conv.in_channels, 7, 7, requires_grad=True)
    rows = []
    for o in range(conv.out_channels):
        (g,) = torch.autograd.grad(conv(x)[0, o].sum(), x)
        rows.append(g[0].abs().sum((1, 2)) > 0)
    return torch.stack(rows)


def test_grouped_convolutions_are_the_two_gpu_split():
    net = model_mod.alexnet_cifar(channels=(8, 8, 8, 8, 8), hidden=16)
    c1, c2, c3, c4, c5 = net.convs
    assert [c.groups for c in net.convs] == [1, 2, 1, 2, 2]
    within = torch.block_diag(torch.ones(4, 4), torch.ones(4, 4)).bool()  # half g sees only half g
    for conv in (c2, c4, c5):
        assert torch.equal(_depends_on(conv), within)
    assert _depends_on(c3).all() and _depends_on(c1).all()  # conv3 crosses; conv1 sees all of the image
    assert [c.groups for c in model_mod.alexnet_cifar(groups=1).convs] == [1] * 5


def test_paper_init():
    torch.manual_seed(0)
    net = model_mod.alexnet()
    layers = net.convs + net.fcs
    biases = [float(layer.bias.detach().mean()) for layer in layers]
    assert biases == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # conv2, conv4, conv5, fc6, fc7 start at 1
    assert all(abs(float(layer.weight.detach().std()) - 0.01) < 5e-4 and abs(float(layer.weight.detach().mean())) < 5e-4
               for layer in layers)
    drops = [m.p for m in net.classifier if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5]


@pytest.mark.parametrize("experiment, classes", [("imagenet", 1000), ("cifar", 10), ("ablations", 10)])
def test_paper_presets_build_section_5s_init_and_section_4_2s_dropout(experiment, classes):
    torch.manual_seed(0)
    net = recipe.build_model(_preset(experiment, "paper"), classes)  # what train_classifier trains
    layers = net.convs + net.fcs
    # Krizhevsky et al. 2012, sec. 5: weights from N(0, 0.01^2); biases 1 in conv2, conv4, conv5 and the
    # fully connected hidden layers, 0 in the rest
    assert [layer.bias.unique().tolist() for layer in layers] == [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0],
                                                                  [0.0]]
    for layer in layers:
        w = layer.weight.detach()
        assert abs(w.std().item() - 0.01) < 0.0006 and abs(w.mean().item()) < 0.001
    # sec. 4.2: dropout 0.5 on the outputs of the first two fully connected layers, nowhere else
    assert [(i, m.p) for i, m in enumerate(net.classifier) if isinstance(m, torch.nn.Dropout)] == [(2, 0.5), (5, 0.5)]
    assert not [m for m in net.features.modules() if isinstance(m, torch.nn.Dropout)]
    # sec. 3.4: every pool overlapping, z = 3, s = 2
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 3 and all((p.kernel_size, p.stride) == (3, 2) for p in pools)


def test_overfits_one_batch_of_real_images(data_root):
    from common import data
    from common.data.augment import normalize
    x, y = data.load("cifar10", data_root)["train"]
    x, y = normalize(x[:16], (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), y[:16]
    torch.manual_seed(0)
    net = model_mod.alexnet_cifar(channels=(16, 16, 32, 32, 16), hidden=64, dropout=0.0)  # LRN, groups, pools on
    net.modern_init()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 and (net(x).argmax(1) == y).all()


# ---------------------------------------------------------------------------------------------------------
# the data pipeline
# ---------------------------------------------------------------------------------------------------------

def test_cifar_loader_reads_the_real_files(data_root):
    from common import data
    (xtr, ytr), (xte, yte) = data.load("cifar10", data_root).values()
    assert xtr.shape == (50000, 3, 32, 32) and xte.shape == (10000, 3, 32, 32) and xtr.dtype == torch.uint8
    assert torch.bincount(ytr).tolist() == [5000] * 10 and torch.bincount(yte).tolist() == [1000] * 10


def test_pca_jitter_recovers_the_colour_axes_and_moves_along_them():
    torch.manual_seed(0)
    axis = torch.tensor([0.6, 0.48, 0.64])  # unit vector: the one direction pixels vary along
    t = torch.rand(64, 1, 8, 8)
    imgs = ((0.2 + 0.5 * t * axis.view(1, 3, 1, 1)) * 255).round().to(torch.uint8)
    eigval, eigvec = data_mod.fit_pca(imgs)
    assert eigval[-1] > 100 * eigval[:2].max()  # rank one (up to rounding)
    assert torch.allclose(eigvec[:, -1].abs(), axis, atol=0.02)
    x = torch.zeros(5, 3, 4, 4)
    shift = data_mod.pca_jitter(x, eigval, eigvec, std=0.1)
    assert torch.equal(shift, shift[:, :, :1, :1].expand_as(shift))  # one RGB offset per image
    along = shift[:, :, 0, 0] @ eigvec[:, -1]
    assert torch.allclose(shift[:, :, 0, 0], along[:, None] * eigvec[:, -1], atol=1e-4)
    assert torch.equal(data_mod.pca_jitter(x, eigval, eigvec, std=0.0), x)


def test_ten_crops_are_corners_centre_and_their_mirrors():
    x = torch.arange(2 * 1 * 6 * 6).view(2, 1, 6, 6)
    c = data_mod.ten_crops(x, 4)
    assert c.shape == (10, 2, 1, 4, 4)
    assert torch.equal(c[0], x[..., :4, :4]) and torch.equal(c[3], x[..., 2:, 2:])
    assert torch.equal(c[4], x[..., 1:5, 1:5]) and torch.equal(c[9], c[4].flip(-1))


def test_ten_crop_testing_averages_the_softmax_over_the_ten_patches():
    torch.manual_seed(0)
    net = model_mod.alexnet_cifar(channels=(4, 4, 8, 8, 4), hidden=8)
    net.modern_init()  # outputs far from uniform, so the views disagree
    x, y = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), torch.arange(6) % 10
    aug = data_mod.Augment("cpu", 32, 4, (0.5,) * 3, (0.25,) * 3)
    rt = Runtime(device=torch.device("cpu"))
    with torch.no_grad():
        net.eval()
        p = torch.stack([net(v).softmax(-1) for v in aug.test(x, ten_crop=True)]).mean(0)  # (6, 10)
    got = evaluate_classifier(net, [(x, y)], rt, lambda b: aug.test(b, ten_crop=True))
    assert round(got["error"] * 6) == int((p.argmax(-1) != y).sum())
    assert got["loss"] == pytest.approx(-p[torch.arange(6), y].log().mean().item(), rel=1e-5)
    one = evaluate_classifier(net, [(x, y)], rt, aug.test)  # the centre patch alone is a different test
    assert one["loss"] != pytest.approx(got["loss"], rel=1e-5)


def _image_folder(root, classes=("a", "b"), per_class=2):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / "imagenet" / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                h, w = 260 + 17 * i, 300 - 9 * i  # odd sizes: the pipeline must resize and crop
                arr = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.jpg", quality=90)
    return root


def test_imagenet_pipeline_is_256_then_227_and_ten_crops(tmp_path):
    from dataclasses import replace
    root = _image_folder(tmp_path)
    tr, val, classes = data_mod.imagenet_loaders(root, batch_size=4, workers=0)
    x, y = next(iter(tr))
    # Krizhevsky et al. 2012, sec. 2: shorter side rescaled to 256, the central 256x256 patch kept
    assert classes == 2 and x.shape == (4, 3, 256, 256) and x.dtype == torch.uint8
    # the paper preset's own pipeline: sec. 4.1's random crops (227, NOTES.md: the paper's 224 plus 3) and
    # mirrors, the PCA jitter at 0.1, and the ten patches at test time
    cfg = replace(_preset("imagenet", "paper"), data_dir=str(root), batch_size=4, workers=0)
    *_, aug, _ = recipe.imagenet_data(cfg, Runtime(device=torch.device("cpu")))
    assert (aug.crop, aug.padding, aug.jitter, cfg.ten_crop) == (227, 0, 0.1, True)
    assert aug.test(x, ten_crop=True).shape == (10, 4, 3, 227, 227)
    aug.jitter = 0.0  # without the colour shift, each training image is a 227x227 window of its 256x256 image
    torch.manual_seed(0)
    seen = set()
    for _ in range(4):
        out = aug.train(x)
        raw = (out * torch.tensor(aug.std).view(1, 3, 1, 1) + torch.tensor(aug.mean).view(1, 3, 1, 1)) * 255
        for img, crop in zip(x.float(), raw):
            views = {f: img.flip(-1) if f else img for f in (False, True)}
            found = [(i, j, f) for f, v in views.items() for i in range(30) for j in range(30)
                     if torch.allclose(v[:, i, j:j + 227], crop[:, 0], atol=0.01)  # its top row, then all of it
                     and torch.allclose(v[:, i:i + 227, j:j + 227], crop, atol=0.01)]
            assert len(found) == 1
            seen.add(found[0])
    assert len(seen) > 8 and {f for *_, f in seen} == {False, True}  # offsets vary, and so does the mirror


def test_imagenet_dataloader_serves_epochs_like_a_tensor_loader():
    ds = torch.utils.data.TensorDataset(torch.arange(12), torch.arange(12))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=True, generator=torch.Generator())
    epochs = data_mod.Epochs(loader, seed=5)
    first = [x.tolist() for x, _ in epochs.batches(0)]
    assert len(epochs) == 4 and sorted(sum(first, [])) == list(range(12))
    assert [x.tolist() for x, _ in epochs.batches(0, start=2)] == first[2:]  # a resumed run picks up mid-epoch
    assert [x.tolist() for x, _ in epochs.batches(1)] != first  # reshuffled every epoch, from the seed alone
    assert [x.tolist() for x, _ in data_mod.Epochs(loader, seed=5).batches(0)] == first


def test_imagenet_smoke_run(tmp_path):
    root = _image_folder(tmp_path / "data")
    card = train.main(["--experiment", "imagenet", "--preset", "smoke", "--data-dir", str(root),
                       "--out-dir", str(tmp_path / "runs")])
    assert card == read_summary(only_run_dir(tmp_path / "runs", "03_alexnet"))
    assert card["model"] == "alexnet" and card["metric"] == "top1_error_10crop" and card["steps"] == 2
    assert card["params"] == 60_965_224 - 998 * 4097  # fc8 sized for the folder's 2 classes
    assert card["paper_value"] == 0.407  # Krizhevsky et al. 2012, Table 2: 1 CNN, 40.7% top-1 (10 patches)


def test_kernel_grid_separates_the_two_gpus():
    torch.manual_seed(0)
    w = torch.randn(96, 3, 11, 11)
    img = figures.kernel_grid(w, groups=2, per_row=16, scale=1, pad=1)
    assert img.shape[0] == 3 and img.min() >= 0 and img.max() <= 1
    assert img.shape[2] == 16 * 12 + 1 and img.shape[1] == 2 * (3 * 12 + 1) + 6  # 3 rows per GPU, gap of 6

    def shown(n):  # kernel n as drawn: stretched to its own [0, 1] range
        return (w[n] - w[n].min()) / (w[n].max() - w[n].min())
    # GPU 1's 48 kernels fill the top block row by row; GPU 2's start the bottom block after the blank gap
    torch.testing.assert_close(img[:, 1:12, 1:12], shown(0))
    torch.testing.assert_close(img[:, 13:24, 13:24], shown(17))  # second row, second column
    torch.testing.assert_close(img[:, 25:36, 181:192], shown(47))
    assert torch.equal(img[:, 37:43], torch.ones(3, 6, img.shape[2]))
    torch.testing.assert_close(img[:, 44:55, 1:12], shown(48))


# ---------------------------------------------------------------------------------------------------------
# the command line and the run record
# ---------------------------------------------------------------------------------------------------------

def _smoke(tmp_path, *flags):
    return train.main(["--preset", "smoke", "--out-dir", str(tmp_path), *flags])


def test_smoke_run_writes_the_full_run_record(tmp_path, data_root):
    card = _smoke(tmp_path)
    run = only_run_dir(tmp_path, "03_alexnet")
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "kernels.png"} <= {
        p.name for p in run.iterdir()}
    summary = read_summary(run)
    assert summary == json.loads(json.dumps(card)) and summary["params"] == count_params(
        recipe.build_model(train.Config(**json.loads((run / "config.json").read_text())["config"]), 10))
    assert summary["dataset"] == "CIFAR-10 (JPEG-q75 mirror)" and summary["steps"] == 4
    assert summary["model"] == "alexnet-cifar-w0.25" and 0 < summary["value"] < 1
    rows = read_metrics(run)
    assert {"train", "test"} == {r["split"] for r in rows}
    (test,) = [r for r in rows if r["split"] == "test"]  # one evaluation, at the last step
    assert test["error"] == summary["value"]
    # the recipe's running training error: mistakes over the 4 x 32 examples trained on since the last evaluation
    assert 0 <= test["train_error"] <= 1 and abs(test["train_error"] * 128 - round(test["train_error"] * 128)) < 1e-6
    assert (run / "kernels.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_exactly_through_the_plateau_schedule(tmp_path, data_root):
    # evaluating every step with patience 1, the LR / 10 decisions fall inside the run and must survive the resume
    flags = ["--schedule", "plateau", "--jitter", "0.1", "--eval-every", "1", "--patience", "1", "--val-size", "100",
             "--test-subset", "100"]
    _smoke(tmp_path / "full", "--steps", "4", *flags)
    _smoke(tmp_path / "half", "--steps", "2", *flags)
    half = only_run_dir(tmp_path / "half", "03_alexnet")
    train.main(["--resume", str(half), "--steps", "4"])
    full = torch.load(only_run_dir(tmp_path / "full", "03_alexnet") / "checkpoint.pt", weights_only=True)
    resumed = torch.load(half / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == full["step"] == 4
    assert full["optimizer"]["param_groups"][0]["lr"] < 0.01  # the schedule did divide the LR
    assert resumed["optimizer"]["param_groups"][0]["lr"] == full["optimizer"]["param_groups"][0]["lr"]
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_relu_vs_tanh_races_each_activation_over_its_rates(tmp_path, data_root):
    # 64 images, 2 epochs of 2 steps: a 50% training error is out of reach, so every net trains both epochs
    card = _smoke(tmp_path, "--experiment", "relu_vs_tanh", "--train-subset", "64", "--target-error", "0.5")
    run = only_run_dir(tmp_path, "03_alexnet")
    assert card["paper_value"] == 6.0 and card["nets"] == 4 and (run / "relu_vs_tanh.png").stat().st_size > 10_000
    assert card["relu"]["epochs"] is None and card["value"] is None
    rows = [r for r in read_metrics(run) if r["split"] == "train_set"]  # the training set, after each epoch
    for act in ("relu", "tanh"):
        rates = card[act]["rates"]
        assert list(rates) == ["0.01", "0.03"] and all(len(c) == 2 for c in rates.values())
        for lr, curve in rates.items():
            assert [round(r[f"error_{act}_lr{lr}"], 4) for r in rows] == curve
        # not reached: the reported rate is the one with the lowest final error
        assert card[act]["curve"] == min(rates.values(), key=lambda c: c[-1])


def test_relu_vs_tanh_stops_an_activation_the_epoch_one_rate_gets_there(tmp_path, data_root):
    card = _smoke(tmp_path, "--experiment", "relu_vs_tanh", "--train-subset", "64", "--target-error", "0.95")
    for act in ("relu", "tanh"):  # every untrained-ish net is under 95% error after one epoch
        assert card[act]["epochs"] == 1 and all(len(c) == 1 for c in card[act]["rates"].values())
        assert card[act]["curve"][-1] <= 0.95
    assert card["value"] == 1.0


def test_relu_vs_tanh_max_minutes_ends_the_race_at_an_epochs_end(tmp_path, data_root):
    card = _smoke(tmp_path, "--experiment", "relu_vs_tanh", "--train-subset", "64", "--target-error", "0.05",
                  "--max-minutes", "1e-6")  # over at once: the first epoch is the last, and is measured in full
    assert (card["epochs"], card["epochs_run"]) == (2, 1)
    assert all(len(c) == 1 for act in ("relu", "tanh") for c in card[act]["rates"].values())


def test_figure_1_crossing_reads_the_epoch_off_the_line_between_evaluations():
    crossing = importlib.import_module("milestones.03_alexnet.experiments").crossing
    assert crossing([0.5, 0.3, 0.2], 0.25) == 2.5  # halfway from 30% (epoch 2) to 20% (epoch 3)
    assert crossing([0.5, 0.26, 0.25], 0.25) == 3.0 and crossing([0.2], 0.25) == 1.0
    assert crossing([0.5, 0.4], 0.25) is None and crossing([], 0.25) is None


def test_figure_1_nets_start_from_the_same_weights_with_the_papers_init():
    torch.manual_seed(0)
    relu = model_mod.FourLayerCNN("relu")
    relu.paper_init()
    torch.manual_seed(0)
    tanh = model_mod.FourLayerCNN("tanh")
    tanh.paper_init()
    for a, b in zip(relu.layers, tanh.layers):
        assert torch.equal(a.weight, b.weight)  # one draw: only the activation (and its biases) differ
        assert abs(a.weight.std().item() - 0.01) < 0.002 and abs(a.weight.mean().item()) < 0.002
    # Section 5: hidden biases 1 "to provide the ReLUs with positive inputs"; tanh's stay 0; first and last 0
    assert [l.bias.unique().tolist() for l in relu.layers] == [[0.0], [1.0], [1.0], [0.0]]
    assert [l.bias.unique().tolist() for l in tanh.layers] == [[0.0]] * 4
    relu.paper_init(relu_bias=0.0)  # --init gaussian: the same kind of weights, zero biases in both nets
    assert [l.bias.unique().tolist() for l in relu.layers] == [[0.0]] * 4
    tanh.modern_init()  # He et al.: std gain / sqrt(fan_in), gain 5/3 for tanh
    conv2 = tanh.layers[1]
    assert abs(conv2.weight.std().item() - (5 / 3) / (32 * 25) ** 0.5) < 0.01


# cuda-convnet's example net, example-layers/layers-18pct.cfg and layer-params-18pct.cfg (the kind of net behind
# the paper's Figure 1; the paper does not give Figure 1's net, so these pin the config files, not the paper)

@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_layers_18pct_is_cuda_convnets_example_net(act):
    torch.manual_seed(0)
    net = model_mod.Layers18pct(act)
    unit = {"relu": "ReLU", "tanh": "Tanh"}[act]
    assert [type(m).__name__ for m in net.features] == [
        "Conv2d", unit, "MaxPool2d", "SpatialResponseNorm",  # conv1 (neuron), pool1 max, rnorm1
        "Conv2d", unit, "AvgPool2d", "SpatialResponseNorm",  # conv2, pool2 avg, rnorm2
        "Conv2d", unit, "AvgPool2d"]  # conv3, pool3 avg, then fc10
    convs = net.layers[:3]
    assert [tuple(c.weight.shape) for c in convs] == [(32, 3, 5, 5), (32, 32, 5, 5), (64, 32, 5, 5)]
    assert all(c.padding == (2, 2) and c.stride == (1, 1) for c in convs)
    pools = [m for m in net.features if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d))]
    assert [(p.kernel_size, p.stride, p.ceil_mode) for p in pools] == [(3, 2, True)] * 3  # sizeX 3, stride 2
    assert tuple(net.fc.weight.shape) == (10, 64 * 4 * 4) and count_params(net) == 89_578
    assert net.features(torch.zeros(2, 3, 32, 32)).shape == (2, 64, 4, 4)
    # an average over the pixels inside the map: a map of ones stays ones at the overhanging last window
    assert torch.equal(pools[1](torch.ones(1, 1, 16, 16)), torch.ones(1, 1, 8, 8))
    norms = [m for m in net.features if isinstance(m, model_mod.SpatialResponseNorm)]
    assert [(m.size, m.scale, m.pow) for m in norms] == [(3, 5e-5, 0.75)] * 2  # rnorm: size 3, scale, pow
    # initW: 0.0001 for conv1, 0.01 for conv2, conv3 and fc10; biases 0
    for layer, std in zip(net.layers, (1e-4, 1e-2, 1e-2, 1e-2)):
        assert abs(layer.weight.std().item() / std - 1) < 0.1 and abs(layer.weight.mean().item()) < 0.1 * std
        assert not layer.bias.any()


def test_spatial_response_norm_is_cuda_convnets_rnorm():
    """rnorm: u / (1 + scale / size^2 * sum of u^2 over the size x size window of the same map, centred and
    clipped at the edges)^pow; cuda-convnet's layer.py divides `scale` by size^2."""
    torch.manual_seed(0)
    a = 40 * torch.randn(2, 3, 5, 6, dtype=torch.float64)
    b = model_mod.SpatialResponseNorm(size=3, scale=5e-5, pow=0.75)(a)
    H, W = a.shape[-2:]
    for x in range(H):
        for y in range(W):
            window = a[:, :, max(0, x - 1):x + 2, max(0, y - 1):y + 2].pow(2).sum((2, 3))  # (2, 3)
            torch.testing.assert_close(b[:, :, x, y], a[:, :, x, y] / (1 + 5e-5 / 9 * window) ** 0.75)
    assert (b - a).abs().max() > 1e-2 * a.abs().max()  # it does normalise at this scale


def test_relu_vs_tanh_18pct_preset_and_bias_rates():
    cfg = _preset("relu_vs_tanh", "18pct")
    # layer-params-18pct.cfg: momW = momB = 0.9, minibatches of 128; no weight costs (Krizhevsky et al. 2012,
    # sec. 3.1: "no regularization of any kind"); 25% training error (Figure 1)
    assert (cfg.net, cfg.batch_size, cfg.momentum, cfg.weight_decay, cfg.target_error) == (
        "layers-18pct", 128, 0.9, 0.0, 0.25)
    assert cfg.lrs == "0.004,0.016" and cfg.jitter == 0.0  # no augmentation either
    net = model_mod.Layers18pct()
    groups = experiments.groups_18pct(net, 0.004)
    assert [g["lr"] for g in groups] == [0.004, 0.008]  # epsB = 0.002 = 2 x epsW = 0.001 in every layer
    assert [len(g["params"]) for g in groups] == [4, 4] and groups[1]["params"] == [l.bias for l in net.layers]


def test_relu_vs_tanh_18pct_logs_the_running_mean_of_each_epochs_batches(tmp_path, data_root):
    card = _smoke(tmp_path, "--experiment", "relu_vs_tanh", "--net", "layers-18pct", "--train-subset", "64",
                  "--target-error", "0.05")  # out of reach: every net trains both epochs
    assert card["net"] == "layers-18pct" and card["nets"] == 4 and card["params"] == 89_578
    assert "running mean" in card["dataset"]
    # the same nets trained by hand: cuda-convnet's CIFAR input (raw 0-255 pixels less the mean image), epsB =
    # 2 epsW, momentum 0.9, and the error counted on each batch in the forward pass that trains on it
    from common import data
    x, y = (t[:64] for t in data.load("cifar10", data_root)["train"])
    mean_image = x.float().mean(0)
    batches = data.TensorLoader(x, y, batch_size=32, shuffle=True, drop_last=True, seed=0)
    for act, lr in (("relu", 0.01), ("tanh", 0.03)):
        torch.manual_seed(0)
        net = model_mod.Layers18pct(act)
        opt = torch.optim.SGD(experiments.groups_18pct(net, lr), lr=lr, momentum=0.9)
        curve = []
        for epoch in range(2):
            wrong = 0
            for xb, yb in batches.batches(epoch):
                logits = net(xb.float() - mean_image)
                wrong += int((logits.argmax(-1) != yb).sum())
                opt.zero_grad()
                torch.nn.functional.cross_entropy(logits, yb).backward()
                opt.step()
            curve.append(round(wrong / 64, 4))
        assert card[act]["rates"][f"{lr:g}"] == curve
    rows = [r for r in read_metrics(only_run_dir(tmp_path, "03_alexnet")) if r["split"] == "train_set"]
    assert [round(r["error_relu_lr0.01"], 4) for r in rows] == card["relu"]["rates"]["0.01"]


def test_ablations_arms_and_the_train_test_gap(tmp_path, data_root):
    card = _smoke(tmp_path, "--experiment", "ablations", "--arms", "no-dropout,full", "--train-eval", "100")
    arms = card["arms"]
    assert list(arms) == ["full design", "no dropout"]  # the table's order, whatever order they were asked in
    for a in arms.values():
        arm = read_summary(Path(a["run_dir"]))
        assert a["train_error"] == arm["train_set_error"] and 0 <= a["train_error"] <= 1
        assert a["gap"] == round(a["test_error"] - a["train_error"], 4)
    overfit = _preset("ablations", "overfit")  # the budget where the full net overfits: a subset, many epochs
    assert (overfit.train_subset, overfit.train_eval, overfit.arms) == (5000, 5000, "full,no-dropout")


def test_groups_trains_each_arm_as_its_own_run(tmp_path, data_root):
    card = _smoke(tmp_path, "--experiment", "groups", "--steps", "1", "--test-subset", "100")
    arms = card["arms"]
    assert list(arms) == ["two GPUs (grouped)", "one GPU, same maps", "one GPU, half the maps"]
    # the smoke width 0.25: 16, 32, 48, 48, 32 maps, 256-unit fc layers; conv2, conv4, conv5 grouped (sec. 3.2)
    def count(maps, groups):
        convs = [(3, 16, 5, 1), (16, 32, 5, groups), (32, 48, 3, 1), (48, 48, 3, groups), (48, 32, 3, groups)]
        convs = [(c_in, m, k, g) for (_, _, k, g), c_in, m in zip(convs, [3] + maps[:4], maps)]
        return sum(m * c // g * k * k + m for c, m, k, g in convs) + maps[4] * 16 * 256 + 256 + 256 * 256 + 256 + 2570
    # Krizhevsky et al. 2012, sec. 3.2: the one-GPU net has half the kernels in conv1-conv4, conv5 and fc as many
    assert [a["params"] for a in arms.values()] == [count([16, 32, 48, 48, 32], 2), count([16, 32, 48, 48, 32], 1),
                                                    count([8, 16, 24, 24, 32], 1)]
    for a in arms.values():
        assert read_summary(Path(a["run_dir"]))["value"] == a["test_error"]
    assert len(list((tmp_path / "03_alexnet").iterdir())) == 4  # three arms and the comparison


def test_experiments_never_import_train():
    # train.py sits on top: it imports recipe.py and experiments.py, neither of which imports it back
    here = Path(train.__file__).parent
    for name in ("recipe.py", "experiments.py", "model.py", "data.py", "figures.py"):
        tree = ast.parse((here / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "train" not in imported, name


def _preset(experiment, preset):
    from common.config import parse_config
    return parse_config(train.Config, ["--experiment", experiment, "--preset", preset], train.PRESETS,
                        experiments=train.EXPERIMENTS)


@pytest.mark.parametrize("experiment", ["cifar", "imagenet", "ablations", "groups"])
def test_every_paper_preset_that_trains_alexnets_is_section_5s_recipe(experiment):
    cfg = _preset(experiment, "paper")
    # N(0, 0.01) init (biases 1 in conv2/4/5, fc6/7), SGD momentum 0.9, weight decay 5e-4, batch 128,
    # LR 0.01 divided by 10 on validation plateaus, three times, ~90 epochs; the paper's LRN, pooling, dropout
    assert (cfg.init, cfg.schedule, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.max_drops,
            cfg.epochs) == ("paper", "plateau", 0.01, 0.9, 5e-4, 128, 3, 90)
    assert (cfg.activation, cfg.lrn, cfg.overlap, cfg.dropout, cfg.jitter) == ("relu", True, True, 0.5, 0.1)
    assert cfg.experiment == experiment and cfg.steps == 0 and cfg.train_subset == 0


def test_sgd_is_section_5s_update_rule():
    """Krizhevsky et al. 2012, sec. 5: v <- 0.9 v - 0.0005 eps w - eps <dL/dw>;  w <- w + v, with eps = 0.01."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = recipe.sgd(_preset("cifar", "paper"), model)
    grads = [[torch.randn_like(p) for p in w0] for _ in range(4)]
    w, v = [p.clone() for p in w0], [torch.zeros_like(p) for p in w0]
    for g in grads:
        for p, gp in zip(model.parameters(), g):
            p.grad = gp.clone()
        opt.step()
        v = [0.9 * vi - 0.0005 * 0.01 * wi - 0.01 * gi for vi, wi, gi in zip(v, w, g)]
        w = [wi + vi for wi, vi in zip(w, v)]
    for p, wi in zip(model.parameters(), w):
        torch.testing.assert_close(p.detach(), wi, rtol=1e-6, atol=1e-7)
    # decay through the gradient (L2), not decoupled, and no dampening or Nesterov: any of those moves w
    assert opt.param_groups[0]["dampening"] == 0 and not opt.param_groups[0]["nesterov"]


def test_plateau_schedule_divides_the_rate_by_10_three_times():
    """Krizhevsky et al. 2012, sec. 5: LR 0.01, divided by 10 when the validation error stopped improving with
    the current rate; reduced three times before termination."""
    cfg = _preset("cifar", "paper")
    opt = recipe.sgd(cfg, torch.nn.Linear(2, 2))
    sched = recipe.lr_schedule(cfg, opt, total=1000)
    rates = []
    for error in [0.9, 0.8, 0.7, 0.6] + [0.6] * 30:  # improving, then stuck for good
        sched.step(error)
        rates.append(opt.param_groups[0]["lr"])
    assert rates[:4] == [0.01] * 4  # no drop while the error improves
    assert sorted(set(rates), reverse=True) == pytest.approx([0.01, 1e-3, 1e-4, 1e-5], rel=1e-9)  # 3 drops only
    # each drop after `patience` (3, ours: the paper dropped by hand) evaluations without a new best
    assert [rates.index(r) for r in sorted(set(rates), reverse=True)] == [0, 6, 9, 12]


def test_paper_preset_trains_with_section_5s_optimiser_through_the_real_loop(tmp_path, data_root):
    card = train.main(["--preset", "paper", "--steps", "1", "--train-subset", "256", "--val-size", "100",
                       "--test-subset", "100", "--width", "0.25", "--out-dir", str(tmp_path)])
    run = only_run_dir(tmp_path, "03_alexnet")
    group = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]
    # sec. 5: momentum 0.9, weight decay 0.0005, learning rate 0.01, batches of 128 examples
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 5e-4)
    assert card["steps"] == 1 and json.loads((run / "config.json").read_text())["config"]["batch_size"] == 128
    (row,) = [r for r in read_metrics(run) if r["split"] == "test"]
    assert round(row["train_error"] * 128, 6) == round(row["train_error"] * 128)  # mistakes in one batch of 128


def test_paper_cifar_pipeline_batches_128_and_jitters_with_sigma_0_1(data_root):
    from dataclasses import replace
    cfg = replace(_preset("cifar", "paper"), data_dir=str(data_root))
    rt = Runtime(device=torch.device("cpu"))
    train_loader, val, test, aug, classes = recipe.cifar_data(cfg, rt)
    assert (train_loader.batch_size, train_loader.drop_last, classes) == (128, True, 10)  # sec. 5: batch 128
    assert val.n == 5000 and train_loader.n == 45_000  # the plateau rule watches held-out images, not the test set
    # sec. 4.1: alpha_i ~ N(0, 0.1), one draw per image, the shift [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T; measured on
    # flat grey images (crops and mirrors then change nothing at the centre)
    torch.manual_seed(0)
    x = torch.full((4096, 3, 32, 32), 128, dtype=torch.uint8)
    out = aug.train(x)[:, :, 16, 16]  # (N, 3), standardised
    mean, std = torch.tensor(recipe.CIFAR_MEAN), torch.tensor(recipe.CIFAR_STD)
    shift = out * std + mean - 128 / 255  # (N, 3): what the jitter added, on the [0, 1] scale
    alpha = (shift @ aug.eigvec) / aug.eigval  # (N, 3): the a_i drawn for each image
    assert alpha.std(0).tolist() == pytest.approx([0.1] * 3, rel=0.05)
    assert alpha.mean(0).abs().max() < 0.01


def test_figure_1_paper_preset_is_the_whole_training_set_without_regularisation():
    cfg = _preset("relu_vs_tanh", "paper")
    assert cfg.train_subset == 0 and cfg.eval_subset == 0 and cfg.weight_decay == 0.0  # "no regularization"
    # "the learning rates for each network were chosen independently": each activation races five rates
    assert cfg.lrs == "0.001,0.003,0.01,0.03,0.1" and cfg.init == "paper"
    assert cfg.target_error == 0.25 and cfg.jitter == 0.0  # Figure 1: epochs to 25% training error
    quick = _preset("relu_vs_tanh", "quick")
    assert quick.train_subset == 0 and quick.init == "paper" and len(quick.lrs.split(",")) >= 3


@pytest.mark.parametrize("args, message", [
    (["--width", "-1"], "--width must be positive"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--channels", "8,8,8"], "--channels takes five positive map counts"),
    (["--experiment", "imagenet", "--data-dir", "."], "ImageNet folder"),
    (["--groups", "3"], "invalid choice"),
    (["--patience", "0"], "--patience must be at least 1"),
    (["--target-error", "0.5"], "--target-error is for --experiment relu_vs_tanh"),
    (["--init", "gaussian"], "--init gaussian is for --experiment relu_vs_tanh"),
    (["--experiment", "ablations", "--arms", "full,no-bn"], "--arms takes a comma-separated list of full"),
    (["--experiment", "relu_vs_tanh", "--lrs", "0.1,x"], "--lrs takes a comma-separated list"),
    (["--experiment", "relu_vs_tanh", "--lrs", "0.1,-1"], "--lrs takes positive learning rates"),
    (["--experiment", "relu_vs_tanh", "--net", "layers-18pct", "--init", "modern"], "--net layers-18pct starts from"),
    (["--net", "layers-18pct"], "--net is for --experiment relu_vs_tanh"),
])
def test_bad_input_is_a_clear_message_not_a_traceback(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # any other exception would be a traceback
        _smoke(tmp_path, *args)
    assert stop.value.code == 2 and message in capsys.readouterr().err
