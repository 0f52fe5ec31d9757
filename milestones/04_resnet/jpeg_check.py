"""How much do JPEG artifacts move a trained net's CIFAR-10 test error? (issue 13: the shared CIFAR-10 copy is
the JPEG-q75 mirror, not the official pixels.)

    python -m milestones.04_resnet.jpeg_check --run runs/04_resnet/<a cifar run> [--quality 95,75,50]

Re-encodes every test image once more at each quality with Pillow, decodes it, and reports the net's test error
and the mean absolute pixel change beside the error on the images as stored. What it can show: how sensitive a
net trained on this copy is to JPEG-sized changes of its input. What it cannot: the error the same recipe would
reach trained and tested on the official pixels, which are not here.
"""

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import data
from common.checkpoint import load_checkpoint
from common.device import setup
from common.data.augment import normalize
from common.data.cifar import MEAN, STD
from common.errors import UserError, exit_on_user_error
from common.loop import evaluate_classifier

from .model import build


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> the same images encoded as JPEG at `quality` and decoded."""
    out = []
    for img in x.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def error(net, x: torch.Tensor, y: torch.Tensor, rt) -> float:
    """Test error on uint8 images, evaluated as training evaluated them (common.loop, the run's precision)."""
    loader = data.TensorLoader(x, y, batch_size=1000, device=rt.device)
    return evaluate_classifier(net, loader, rt, lambda b: normalize(b.to(rt.device), MEAN, STD))["error"]


def load_net(run: Path):
    """(the trained net of a 04 cifar run, its precision): config.json names the model, shortcut and width."""
    record = run / "config.json"
    if not record.is_file():
        raise UserError(f"{run} is not a run directory of 04_resnet (no config.json)")
    cfg = json.loads(record.read_text())
    if cfg.get("milestone") != "04_resnet" or cfg["config"].get("experiment") != "cifar":
        raise UserError(f"{run} is not a 04_resnet cifar run")
    c = cfg["config"]
    net = build(c["model"], shortcut=c["shortcut"], width=c["width"])
    net.load_state_dict(load_checkpoint(run)["model"])
    return net.eval(), c["precision"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m milestones.04_resnet.jpeg_check", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="run directory of `train 04_resnet` (the cifar experiment)")
    p.add_argument("--quality", default="95,75,50", help="JPEG qualities to re-encode at, comma-separated (1-95)")
    p.add_argument("--test-size", type=int, default=0, help="the first N test images only (0 = all 10,000)")
    p.add_argument("--data-dir", default=None, help="data root (default: $MILESTONES_DATA)")
    args = p.parse_args(argv)

    def run():
        try:
            qualities = [int(q) for q in args.quality.split(",")]
        except ValueError:
            raise UserError(f"--quality takes integers, comma-separated; got {args.quality!r}") from None
        if not qualities or not all(1 <= q <= 95 for q in qualities):
            raise UserError(f"--quality values must be in 1..95 (Pillow's range); got {args.quality!r}")
        net, precision = load_net(Path(args.run))
        x, y = data.load("cifar10", args.data_dir)["test"]
        if args.test_size:
            x, y = x[:args.test_size], y[:args.test_size]
        with setup("cpu", precision) as rt:
            result = {"stored": dict(error=error(net, x, y, rt), pixel_change=0.0)}
            print(f"as stored: test error {result['stored']['error']:.2%} on {len(x)} images ({rt.precision})")
            for q in qualities:
                z = jpeg_roundtrip(x, q)
                result[f"q{q}"] = dict(error=error(net, z, y, rt),
                                       pixel_change=(z.float() - x.float()).abs().mean().item())
                print(f"re-encoded at quality {q}: test error {result[f'q{q}']['error']:.2%}, "
                      f"mean |pixel change| {result[f'q{q}']['pixel_change']:.2f} / 255")
        return result
    return exit_on_user_error(run)


if __name__ == "__main__":
    main()
