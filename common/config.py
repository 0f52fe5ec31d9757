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
import re
import sys
import textwrap
import typing
from dataclasses import dataclass, field

from .cli import Parser
from .errors import UserError

PRESET_NAMES = ("paper", "default", "quick", "smoke")
PRESET_HELP = {  # what the four presets every milestone has mean; a milestone explains its own other names
    "paper": "The paper's recipe (as far as it is published) at its scale.",
    "default": "Close to the paper's, sized for one GPU; runs without --preset.",
    "quick": "Sized for a CPU: minutes, and still learns.",
    "smoke": "Seconds, for tests: everything runs, nothing is learned.",
}
# --help's groups: the flags of every run (core), how the training goes (recipe: the TrainConfig fields not in
# core, and fields whose name holds one of RECIPE_WORDS), the experiment-specific ones (`only=`), the rest (model)
CORE = ("preset", "experiment", "data_dir", "device", "precision", "compile", "seed", "out_dir", "resume",
        "threads", "deterministic")
RECIPE_WORDS = {"epochs", "steps", "batch", "lr", "lrs", "warmup", "schedule", "momentum", "nesterov", "decay",
                "clip", "optimizer", "optim", "beta1", "eps", "smoothing", "every", "drops", "budget", "minutes",
                "mu", "hessian", "tokens", "batching"}


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

    preset: str = arg("default", "the recipe: one of the presets above")
    data_dir: typing.Optional[str] = arg(None, "data root (default: $MILESTONES_DATA, else ~/.cache/milestones/data)")
    out_dir: str = arg("runs", "where run directories are written")
    device: str = arg("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: str = arg("fp32", "fp32, bf16 (autocast), fp16 (CUDA, GradScaler) or auto (bf16 where native, "
                         "else fp32)", choices=("auto", "fp32", "bf16", "fp16"))
    compile: str = arg("off", "torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune or off; "
                       "alone: default", choices=COMPILE_MODES)
    seed: int = arg(0, "random seed (same on every rank)")
    deterministic: bool = arg(False, "deterministic kernels (slower); on a GPU, what makes --resume exact")
    epochs: int = arg(1, "passes over the training set")
    steps: int = arg(0, "optimizer steps; when > 0 it replaces --epochs")
    batch_size: int = arg(64, "examples per optimizer step, over all ranks")
    lr: float = arg(0.1, "learning rate")
    resume: typing.Optional[str] = arg(None, "checkpoint.pt or run directory to continue from")
    threads: int = arg(0, "CPU threads (0 = torch's default); on a CPU shared with other jobs, 1 is often much "
                       "faster")
    log_every: int = arg(50, "log the loss and throughput every N steps (and at the last)")
    eval_every: int = arg(0, "evaluate every N steps (0 = once an epoch; always at the last step)")
    ckpt_every: int = arg(1000, "save checkpoint.pt every N steps (and at the end)")


def _field_type(f, hints):
    t = hints[f.name]
    if typing.get_origin(t) is typing.Union:  # Optional[X]
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


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


def _preset_names(presets: dict) -> list:
    """Every preset name, the four of PRESET_NAMES first, in that order."""
    names = {k.split("/")[-1] for k in presets} | {"default"}
    return sorted(names, key=lambda n: (PRESET_NAMES.index(n) if n in PRESET_NAMES else len(PRESET_NAMES), n))


def _described(doc) -> str:
    """An experiment's line in --help: its docstring's whole first paragraph, ended as a sentence."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    return text if not text or text[-1] in ".!?" else text + "."


def _group(f) -> str:
    if f.name in CORE:
        return "core"
    if f.metadata.get("only"):
        return "experiment"
    words = set(f.name.split("_"))
    return "recipe" if words & RECIPE_WORDS or f.name.startswith("lr") else "model"


def _metavar(f, t) -> str:
    flag = "--" + f.name.replace("_", "-")
    if f.metadata.get("choices"):
        listed = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
        return listed if len(flag) + len(listed) < 23 else "NAME"
    return {"data_dir": "DIR", "out_dir": "DIR", "resume": "RUN", "preset": "P", "experiment": "E"}.get(
        f.name, {int: "N", float: "X", str: "S"}.get(t, "V"))


def preset_experiments(presets: dict) -> dict:
    """{experiment: preset} for the experiments a preset picks by itself (02's MNIST race: `--preset fast`
    runs the experiment fast); such an experiment is reached through its preset only, never by --experiment."""
    return {v["experiment"]: k for k, v in presets.items() if "/" not in k and "experiment" in v}


def preset_values(cls, presets: dict, given: dict) -> dict:
    """The values the preset named in `given` (and its "<experiment>/<preset>" entry) set, then `given` itself."""
    name = given.get("preset", "default")
    values = dict(presets.get(name, {}))
    if "experiment" in {f.name for f in dataclasses.fields(cls)}:
        exp = given.get("experiment", values.get("experiment", getattr(cls, "experiment", None)))
        if name not in PRESET_NAMES and name not in presets and f"{exp}/{name}" not in presets:
            # a milestone's own preset (modern, fast, ...) given to an experiment that has none of that name would
            # silently run the defaults
            owners = sorted(k.split("/")[0] for k in presets if k.endswith(f"/{name}"))
            raise UserError(f"--preset {name} is for --experiment {' or '.join(owners)}, not {exp}")
        values.update(presets.get(f"{exp}/{name}", {}))
    values.update(given)
    values["preset"] = name
    return values


class _HelpFormatter(argparse.HelpFormatter):
    """The description's list entries ("  name  text") wrapped with a hanging indent; the rest as prose."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=26)

    def _fill_text(self, text, width, indent):
        out = []
        for line in text.splitlines():
            entry = re.match(r"(\s+\S+\s+)\S", line) if line.startswith(" ") else None
            hang = " " * len(entry.group(1)) if entry else ""
            out.append(textwrap.fill(line, width, subsequent_indent=hang) if line.strip() else "")
        return "\n".join(out)


def _help_text(cls, prog: str, description: str, presets: dict, experiments: dict, shown: dict,
               given: dict, preset_help: dict, experiment_help: dict, selectors: tuple) -> str:
    """The part of --help above the flags: what each experiment and preset is, and whose defaults are shown."""
    names = _preset_names(presets)
    hidden = preset_experiments(presets)
    lines = [description, ""]
    if experiments:
        shown_exps = [e for e in experiments if e not in hidden]
        w = max(map(len, shown_exps)) + 2
        lines.append("experiments (--experiment E):")
        lines += [f"  {e:<{w}}{experiment_help.get(e) or _described(experiments[e].__doc__)}" for e in shown_exps]
    w = max(map(len, names)) + 2
    lines.append("presets (--preset P):")
    exps = [e for e in (experiments or {}) if e not in hidden]
    for n in names:
        text = preset_help.get(n) or PRESET_HELP.get(n, "")
        scope = [e for e in exps if f"{e}/{n}" in presets]
        if n not in presets and n not in PRESET_NAMES and scope and len(scope) < len(exps):
            text = f"({', '.join(scope)}) {text}"
        lines.append(f"  {n:<{w}}{text}")
    lines.append("")
    whose = " ".join(f"--{k} {shown[k]}" for k in ("experiment", *selectors, "preset")
                     if k == "preset" or k in shown and (experiments or k != "experiment"))
    if "preset" in given:
        lines.append(f"Defaults shown are those of {whose}.")
    else:
        lines.append(f"Defaults shown are those of {whose}, what the command runs without --preset; "
                     f"`--preset quick --help` shows quick's.")
    return "\n".join(lines)


def build_parser(cls, prog: str, description: str, presets: dict, experiments: dict = None, given: dict = None,
                 preset_help: dict = None, experiment_help: dict = None, only_for: dict = None) -> argparse.ArgumentParser:
    """The train script's parser. Its --help shows the values the preset and experiment named in `given` set
    (none named: the default preset's), the core, recipe and model flags, and the flags of that experiment only.
    `only_for` ({"model": {"z_dim": ("vae", "gan")}}) names flags that mean something for some values of another
    flag only: --help shows those of its value and says where the others are."""
    given, only_for = given or {}, only_for or {}
    names = _preset_names(presets)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    shown = {**defaults, **preset_values(cls, presets, given)}
    exp = shown.get("experiment")
    head = _help_text(cls, prog, description, presets, experiments, shown, given, preset_help or {},
                      experiment_help or {}, tuple(only_for))
    usage = f"{prog} [--preset P]" + (" [--experiment E]" if experiments else "") + " [flags]"
    p = Parser(prog=prog, usage=usage, description=head, formatter_class=_HelpFormatter, add_help=False)
    groups = {"core": p.add_argument_group("core"), "recipe": p.add_argument_group("recipe"),
              "model": p.add_argument_group("model and data")}
    others = [f for f in dataclasses.fields(cls) if f.metadata.get("only") and exp not in f.metadata["only"]]
    groups["experiment"] = p.add_argument_group(
        f"for --experiment {exp}" if experiments else "experiment-specific",
        "Other experiments' flags: `--experiment E --help` lists them." if others else None)
    for key, flags in only_for.items():
        hidden = [f for f in dataclasses.fields(cls) if f.name in flags and shown[key] not in flags[f.name]]
        others += hidden
        groups["--" + key] = p.add_argument_group(f"for --{key} {shown[key]}", f"Other {key}s' flags: `--{key} "
                                           f"{key[0].upper()} --help` lists them." if hidden else None)
    groups["core"].add_argument("-h", "--help", action="help", help="this help and exit")
    hints = typing.get_type_hints(cls)
    for f in sorted(dataclasses.fields(cls), key=lambda f: CORE.index(f.name) if f.name in CORE else len(CORE)):
        flag = "--" + f.name.replace("_", "-")
        help_ = {"preset": "one of the presets above", "experiment": "one of the experiments above"}.get(
            f.name, f.metadata.get("help", ""))
        value = shown.get(f.name)
        if value != f.default:  # the preset's value, not the one the help text names
            help_ = re.sub(r" ?\(default: [^)]*\)", "", help_)
        if value is not None and "(default:" not in help_:
            help_ += f" (default: {value!r})" if value == "" else f" (default: {value})"
        t = _field_type(f, hints)
        kw = dict(dest=f.name, default=argparse.SUPPRESS, metavar=_metavar(f, t),
                  help=argparse.SUPPRESS if f in others else help_.replace("%", "%%"))
        g = groups[next(("--" + k for k in only_for if f.name in only_for[k]), _group(f))]
        if f.name == "preset":
            g.add_argument(flag, choices=names, **kw)
        elif f.name == "compile":  # --compile alone means torch.compile's default mode; "false" keeps old commands
            g.add_argument(flag, nargs="?", const="default", type=_compile_mode, **{**kw, "metavar": "MODE"})
        elif f.name == "experiment" and experiments:
            g.add_argument(flag, choices=list(experiments), **kw)
        elif t is bool:
            # --flag turns it on, --flag false turns it off
            g.add_argument(flag, type=_bool, nargs="?", const=True, **{**kw, "metavar": "BOOL"})
        else:
            g.add_argument(flag, type=t, choices=f.metadata.get("choices"), **kw)
    return p


def _named(argv: list, names=()) -> dict:
    """The --preset, --experiment (and --<names>) an argv gives (what --help shows the values of), nothing else."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("preset", "experiment", *names):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS)
    return vars(p.parse_known_args(argv)[0])


def parse_config(cls, argv=None, presets: dict = None, prog: str = None, description: str = "",
                 experiments: dict = None, milestone: str = None, preset_help: dict = None,
                 experiment_help: dict = None, only_for: dict = None):
    """Parse argv into an instance of the dataclass `cls`, applying presets. Bad flags exit with argparse's message;
    a flag that does not apply to the chosen experiment, or a --resume of another milestone's run, is a UserError."""
    presets = presets or {}
    argv = sys.argv[1:] if argv is None else list(argv)
    named = _named(argv, only_for or ()) if "-h" in argv or "--help" in argv else {}
    parser = build_parser(cls, prog or "train", description, presets, experiments, named, preset_help,
                          experiment_help, only_for)
    flags = vars(parser.parse_args(argv))
    check_preset_experiment(presets, flags)
    given = flags
    if given.get("resume"):  # continue with the run's own settings; flags given now still win
        given = {**resumed_config(given["resume"], cls, milestone), **given}
    values = preset_values(cls, presets, given)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:  # a preset naming a field that does not exist is a bug in the milestone, not user error
        raise TypeError(f"preset {values['preset']!r} sets unknown fields {sorted(unknown)}")
    cfg = cls(**values)
    check_common(cfg)
    check_applies(cls, flags, getattr(cfg, "experiment", None))
    return cfg


def check_preset_experiment(presets: dict, flags: dict) -> None:
    """An experiment that its own preset picks is asked for by that preset, and that preset runs no other."""
    by_preset = preset_experiments(presets)
    exp, name = flags.get("experiment"), flags.get("preset")
    if exp in by_preset and name != by_preset[exp]:
        raise UserError(f"--experiment {exp} is now --preset {by_preset[exp]}: give that instead")
    picked = presets.get(name, {}).get("experiment") if "/" not in str(name) else None
    if picked and exp is not None and exp != picked:
        raise UserError(f"--preset {name} runs --experiment {picked}; it takes no other --experiment")


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
                  milestone: str = None, preset_help: dict = None, experiment_help: dict = None,
                  only_for: dict = None):
    """The whole of a train script's main(): parse the flags (presets applied), run the chosen experiment
    `experiments[cfg.experiment](cfg, rt, argv)` on the runtime `setup` gives, and turn user mistakes into
    one-line errors with exit status 2. `preset_help` says in a sentence what each of the milestone's own preset
    names (beyond PRESET_NAMES) is; `experiment_help` replaces the docstring of an experiment's function in
    --help (for functions that run several experiments); `only_for` groups --help's flags by another flag
    (build_parser)."""
    from .device import setup
    from .errors import exit_on_user_error

    description = _first_line(doc)
    if callable(experiments):  # a bare run(cfg, argv) function
        return exit_on_user_error(lambda: experiments(parse_config(cls, argv, presets, prog=prog,
                                                                   description=description), argv))

    def run():
        cfg = parse_config(cls, argv, presets, prog, description, experiments, milestone, preset_help,
                           experiment_help, only_for)
        with setup(cfg.device, cfg.precision, cfg.seed, cfg.threads, cfg.deterministic) as rt:
            return experiments[cfg.experiment](cfg, rt, argv)
    return exit_on_user_error(run)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
