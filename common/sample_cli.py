"""`python -m milestones sample`'s flags: one set for every generative milestone.

    python -m milestones sample <id> --run DIR [--n N] [--prompt TEXT] [--temperature T] [--seed S]
                                               [--device D] [--out FILE]

05's and 06's text and 07's images take the same names: --n is how much to generate (05's earlier --length
still works). Each milestone's sample.py builds its parser here and adds its own flags (06: --source, --top-k;
07: --interpolate, --trajectory, ...); a shared flag that means nothing for a milestone is a one-line error there.
"""

import argparse

from .cli import Parser

SHARED = ("--run", "--n", "--prompt", "--temperature", "--seed", "--device", "--out")


def add_sample_flags(p: argparse.ArgumentParser, n_default: int = None, temperature: float = None,
                     n_help: str = "how much to generate: tokens (05_lstm), characters (06_transformer charlm) or "
                                   "images (07_vae_gan_diffusion)", run_required: bool = True):
    """The shared flags, with a milestone's defaults for --n and --temperature; returns p."""
    d = f" (default: {n_default})" if n_default is not None else ""
    t = f" (default: {temperature})" if temperature is not None else ""
    p.add_argument("--run", required=run_required, metavar="DIR", help="the run directory (or a checkpoint .pt "
                   "in it)")
    p.add_argument("--n", type=int, default=n_default, metavar="N", help=n_help + d)
    p.add_argument("--length", type=int, dest="n", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # = --n
    p.add_argument("--prompt", default=None, metavar="TEXT", help="text models: the text to continue")
    p.add_argument("--temperature", type=float, default=temperature, metavar="T", help="text models: the "
                   "softmax temperature, < 1 safer, > 1 wilder" + t)
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of the draws (default: 0)")
    p.add_argument("--device", default="cpu", metavar="D", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    p.add_argument("--out", default=None, metavar="FILE", help="where to write what is generated (text: as well "
                   "as printing it; images: the PNG, default <run>/samples/<kind>-seed<S>.png)")
    return p


def sample_parser(prog: str, description: str, **defaults) -> Parser:
    """A milestone's `sample` parser: the shared flags (add_sample_flags' defaults), one-line errors."""
    p = Parser(prog=prog, description=description, usage=f"{prog} --run DIR [flags]")
    return add_sample_flags(p, **defaults)
