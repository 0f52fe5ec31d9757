"""Dataclass configs <-> the command line, with presets.

A milestone declares its settings once, as a dataclass whose fields carry their help text:

    @dataclass
    class Config(TrainConfig):
        hidden: int = field(default=800, metadata={"help": "hidden units"})

and its presets as plain dicts of overrides. Values are resolved in this order, later wins:
dataclass default < preset < "<experiment>/<preset>" (when the config has an `experiment`) < flags given.
"""

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field

from .cli import Parser
from .errors import UserError

PRESET_NAMES = ("paper", "default", "quick", "smoke")


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")  # --compile: torch.compile's modes, or off


def arg(default, help: str, choices=None, only=None):
    """A dataclass field with help text for its command-line flag; `choices` limits its values, `only` names the
    experiments it applies to (giving it to another experiment is an error, not a silently ignored flag)."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if only is not None:
        meta["only"] = (only,) if isinstance(only, str) else tuple(only)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """What every train script accepts (docs/DESIGN.md, command-line contract)."""

    preset: str = arg("default", "recipe: paper (the paper's, for a GPU), default (close to the paper on one GPU "
                      "in minutes), quick (a few CPU minutes that still learn), smoke (seconds, for tests)")
    data_dir: typing.Optional[str] = arg(None, "data root (default: $MILESTONES_DATA, else ~/.cache/milestones/data)")
    out_dir: str = arg("runs", "where run directories are written")
    device: str = arg("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: str = arg("fp32", "fp32; bf16 autocast (CUDA and CPU); fp16 with GradScaler (CUDA only); auto: "
                         "bf16 where the hardware has it natively, else fp32", choices=("auto", "fp32", "bf16", "fp16"))
    compile: str = arg("off", "torch.compile the model: default; reduce-overhead (CUDA graphs: for small nets "
                       "whose steps are launch-bound on a GPU); max-autotune; `--compile` alone = default",
                       choices=COMPILE_MODES)
    seed: int = arg(0, "random seed (same on every rank)")
    deterministic: bool = arg(False, "deterministic kernels (cuDNN/cuBLAS determinism, cuDNN autotuning off): "
                              "on a GPU, what makes --resume continue weight for weight; slower")
    epochs: int = arg(1, "passes over the training set")
    steps: int = arg(0, "optimizer steps to train; when > 0 it replaces --epochs")
    batch_size: int = arg(64, "examples per optimizer step, summed over all ranks")
    lr: float = arg(0.1, "learning rate")
    resume: typing.Optional[str] = arg(None, "checkpoint.pt or run directory to continue from")
    threads: int = arg(0, "CPU threads for torch's ops (0 = torch's default). Small nets on a shared CPU often run "
                       "much faster with 1: OpenMP threads waiting for a busy core stall every op")
    log_every: int = arg(50, "log the training loss and throughput every N steps (and at the last)")
    eval_every: int = arg(0, "evaluate every N steps (0 = once an epoch; always at the last step)")
    ckpt_every: int = arg(1000, "save checkpoint.pt every N steps (and at the end, with the results)")


def _field_type(f, hints):
    t = hints[f.name]
    if typing.get_origin(t) is typing.Union:  # Optional[X]
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help text, and the experiment list (the epilog) laid out as written."""


def _first_line(doc) -> str:
    return (doc or "").strip().split("\n")[0]


def _bool(s: str) -> bool:
    v = s.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def _compile_mode(s: str) -> str:
    """--compile's value: a torch.compile mode, or off (true/false as older commands wrote them)."""
    v = {"true": "default", "1": "default", "false": "off", "0": "off", "no": "off"}.get(s.lower(), s)
    if v not in COMPILE_MODES:
        raise argparse.ArgumentTypeError(f"invalid choice: {s!r} (choose from {', '.join(COMPILE_MODES)})")
    return v


def build_parser(cls, prog: str, description: str, presets: dict, experiments: dict = None) -> argparse.ArgumentParser:
    names = sorted({k.split("/")[-1] for k in presets} | {"default"}, key=lambda n: (n not in PRESET_NAMES, n))
    epilog = None
    if experiments:
        epilog = "experiments:\n" + "\n".join(f"  {name:<22} {_first_line(fn.__doc__)}" for name, fn in experiments.items())
    p = Parser(prog=prog, description=description, epilog=epilog,
                                formatter_class=_HelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        t = _field_type(f, hints)
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help_ + f" (default: {f.default})")
        if f.metadata.get("only"):
            kw["help"] += f" [--experiment {'/'.join(f.metadata['only'])}]"
        if f.name == "preset":
            p.add_argument(flag, choices=names, **kw)
        elif f.name == "compile":  # --compile alone means torch.compile's default mode; "false" keeps old commands
            p.add_argument(flag, nargs="?", const="default", type=_compile_mode, metavar="MODE", **kw)
        elif f.name == "experiment" and experiments:
            p.add_argument(flag, choices=list(experiments), **kw)
        elif t is bool:
            # --flag turns it on, --flag false turns it off
            p.add_argument(flag, type=_bool, nargs="?", const=True, metavar="BOOL", **kw)
        else:
            p.add_argument(flag, type=t, choices=f.metadata.get("choices"), **kw)
    return p


def parse_config(cls, argv=None, presets: dict = None, prog: str = None, description: str = "",
                 experiments: dict = None, milestone: str = None):
    """Parse argv into an instance of the dataclass `cls`, applying presets. Bad flags exit with argparse's message;
    a flag that does not apply to the chosen experiment, or a --resume of another milestone's run, is a UserError."""
    presets = presets or {}
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(cls, prog or "train", description, presets, experiments)
    flags = vars(parser.parse_args(argv))
    given = flags
    if given.get("resume"):  # continue with the run's own settings; flags given now still win
        given = {**resumed_config(given["resume"], cls, milestone), **given}
    name = given.get("preset", "default")
    values = {}
    values.update(presets.get(name, {}))
    names = {f.name for f in dataclasses.fields(cls)}
    if "experiment" in names:
        exp = given.get("experiment", values.get("experiment", getattr(cls, "experiment", None)))
        values.update(presets.get(f"{exp}/{name}", {}))
    values.update(given)
    values["preset"] = name
    unknown = set(values) - names
    if unknown:  # a preset naming a field that does not exist is a bug in the milestone, not user error
        raise TypeError(f"preset {name!r} sets unknown fields {sorted(unknown)}")
    cfg = cls(**values)
    check_common(cfg)
    check_applies(cls, flags, getattr(cfg, "experiment", None))
    return cfg


def check_applies(cls, flags: dict, experiment) -> None:
    """A flag given on the command line for an experiment it does not apply to is a mistake worth saying."""
    for f in dataclasses.fields(cls):
        only = f.metadata.get("only")
        if only and f.name in flags and experiment not in only:
            raise UserError(f"--{f.name.replace('_', '-')} is for --experiment {' or '.join(only)}, "
                            f"not {experiment}")


def resumed_config(resume: str, cls, milestone: str = None) -> dict:
    """The resolved config a run recorded in its config.json (resume accepts a run dir or its checkpoint).
    The checkpoint must exist (a clear error now, not after the data has loaded) and belong to `milestone`."""
    from .checkpoint import find_checkpoint

    run_dir = find_checkpoint(resume).parent
    try:
        record = json.loads((run_dir / "config.json").read_text())
        saved = record["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no record: the flags given (and defaults) decide, and loading the checkpoint reports problems
    owner = record.get("milestone")
    if milestone and owner and owner != milestone:
        raise UserError(f"{resume} is a run of {owner}, not {milestone}: continue it with "
                        f"`python -m milestones train {owner} --resume {resume}`")
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in saved.items() if k in names and k not in ("resume",)}


def parse_list(text: str, name: str, cast, allowed=None) -> list:
    """'a,b,c' -> [cast(a), cast(b), cast(c)], each in `allowed` if given; anything else is a UserError
    naming --name."""
    try:
        items = [cast(s.strip()) for s in text.split(",") if s.strip()]
    except ValueError:
        items = []
    if not items or (allowed and any(i not in allowed for i in items)):
        raise UserError(f"--{name} takes a comma-separated list{' of ' + ', '.join(allowed) if allowed else ''}, "
                        f"got {text!r}")
    return items


def parse_rates(text: str, name: str = "lrs") -> list[float]:
    """'0.01,0.1' -> [0.01, 0.1]: the learning rates of a sweep, each finite and > 0; anything else is a
    UserError naming --name."""
    rates = parse_list(text, name, float)
    if not all(0 < r < float("inf") for r in rates):
        raise UserError(f"--{name} takes positive learning rates, got {text!r}")
    return rates


def parse_sizes(text: str, flag: str) -> list[int]:
    """'800' or '500,300' -> [800] or [500, 300]; anything else is a UserError naming the flag."""
    try:
        sizes = parse_list(text, flag.lstrip("-"), int)
    except UserError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UserError(f"{flag} takes positive layer sizes separated by commas (e.g. 800 or 500,300), got {text!r}")
    return sizes


def check_common(cfg) -> None:
    """Range checks argparse cannot express."""
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    for name in ("log_every", "ckpt_every"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    for name in ("steps", "threads", "eval_every"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise UserError(f"--lr must be positive, got {cfg.lr}")


def train_command(cls, presets: dict, experiments, argv=None, prog: str = "train", doc: str = "",
                  milestone: str = None):
    """The whole of a train script's main(): parse the flags (presets applied), run the chosen experiment
    `experiments[cfg.experiment](cfg, rt, argv)` on the runtime `setup` gives, and turn user mistakes into
    one-line errors with exit status 2."""
    from .device import setup
    from .errors import exit_on_user_error

    description = _first_line(doc)
    if callable(experiments):  # a bare run(cfg, argv) function
        return exit_on_user_error(lambda: experiments(parse_config(cls, argv, presets, prog=prog,
                                                                   description=description), argv))

    def run():
        cfg = parse_config(cls, argv, presets, prog, description, experiments, milestone)
        with setup(cfg.device, cfg.precision, cfg.seed, cfg.threads, cfg.deterministic) as rt:
            return experiments[cfg.experiment](cfg, rt, argv)
    return exit_on_user_error(run)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
