"""python -m milestones {list,train,sample,compare,bench,check,course}"""

import importlib
import os
import sys

from common.cli import Parser
from common.config import COMPILE_MODES
from common.errors import UserError, exit_on_user_error
from common.sample_cli import add_sample_flags

from . import ALIASES, COURSE, chapter_of, is_built, meta
from .compare import WIDTH, add_compare_arguments, format_table, runs_dir, table_of


def cmd_list(args) -> None:
    rows = [meta(m) for m in COURSE]
    if args.wide:
        header = ("id", "year", "paper", "dataset", "headline metric", "status")
        table = [(r["id"], str(r["year"]), r["paper"], r["dataset"], r["metric"], r["status"]) for r in rows]
    else:
        header = ("id", "year", "milestone", "paper", "status")
        table = [(r["id"], str(r["year"]), r["title"], r["short"], r["status"]) for r in rows]
    print(format_table(header, table, width=None if args.wide else WIDTH))

NAMES = "an id (01_dnn), its number (01), its name (dnn) or its model's (" + ", ".join(ALIASES) + ")"


def _resolve(mid: str) -> str:
    """The built chapter an id, number, name or model name (ALIASES) means."""
    chapter = chapter_of(mid)
    if not is_built(chapter):
        raise UserError(f"milestone {chapter} is planned but not built yet")
    return chapter


def _alias_flags(name: str, rest: list) -> list:
    """The flags a model name adds to `train` (gpt: --experiment charlm), refused when `rest` gives that flag too."""
    flags = list(ALIASES.get(name, ())[1:])
    if flags and any(a == flags[0] or a.startswith(flags[0] + "=") for a in rest):
        raise UserError(f"`train {name}` is `train {ALIASES[name][0]} {' '.join(flags)}`: for another "
                        f"{flags[0]}, name the chapter (train {ALIASES[name][0]} {flags[0]} ...)")
    return flags


def cmd_train(args, rest) -> None:
    mid = _resolve(args.milestone)
    train = importlib.import_module(f"milestones.{mid}.train")
    train.main(_alias_flags(args.milestone, rest) + list(rest), prog=f"python -m milestones train {mid}")


def cmd_sample(args, rest) -> None:
    mid = _resolve(args.milestone)
    try:
        sample = importlib.import_module(f"milestones.{mid}.sample")
    except ModuleNotFoundError:
        raise UserError(f"{mid} does not generate anything; `sample` is for generative milestones") from None
    sample.main(rest, prog=f"python -m milestones sample {mid}")


def compare_views(args) -> str:
    """compare --plot / --history: the path of the PNG written. (Here, above compare, history and bench, so
    none of them imports another in a circle.)"""
    if args.plot and args.history:
        raise UserError("--plot and --history draw different pictures: give one of them")
    if not args.plot and not args.history:
        raise UserError("--out and --x go with --plot METRIC (--out also with --history)")
    if args.history:
        if args.x or args.filter:
            raise UserError("--x and --filter go with --plot, not --history")
        from .history import draw_history
        return str(draw_history(args.runs, args.out))
    from .curves import plot_curves
    return str(plot_curves(args.runs, args.plot, args.x or "step", args.filter or (), args.out))


def cmd_compare(args) -> None:
    runs_dir(args)
    if args.update:
        from .generated import update

        for path, n in update(args.update):
            print(f"{path}: {n} table(s) regenerated")
        return
    if args.plot or args.history or args.out or args.x:
        if args.columns or args.show:
            raise UserError("--columns and --show go with the table, not with --plot or --history")
        print(compare_views(args))
    else:
        print(table_of(args))


def cmd_bench(args) -> None:
    from .bench import main as bench

    bench(args)


def cmd_check(args) -> None:
    from .check import main as check

    check(args)


def cmd_course(args) -> None:
    """No id: the timeline and where to start. An id (01, dnn, 01_dnn): that chapter's "## Course" section."""
    from .course import chapter, timeline

    print(chapter(_resolve(args.milestone)) if args.milestone else timeline())


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = Parser(prog="python -m milestones",
                                description="Run the history of deep learning: train, sample and compare its "
                                            "milestone models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,train,sample,compare,bench,check,course}")
    lst = sub.add_parser("list", help="the milestones in course order")
    lst.add_argument("--wide", action="store_true", help="full paper names and datasets (wider than 100 columns)")
    t = sub.add_parser("train", help="train a milestone (flags after the id go to its train script; "
                                     "`train <id> --help` lists them)")
    t.add_argument("milestone", help=NAMES)
    s = sub.add_parser("sample", help="generate from a trained generative milestone (`sample --help` lists the "
                                      "flags)", usage="python -m milestones sample <id> --run DIR [flags]",
                       description="Generate from a trained run of 05_lstm (text), 06_transformer (text, or a "
                                   "translation with --source) or 07_vae_gan_diffusion (images). These flags mean "
                                   "the same for each; `sample <id> --help` adds the milestone's own.")
    s.add_argument("milestone", help=NAMES)
    add_sample_flags(s, run_required=False)
    c = sub.add_parser("compare", help="one row per run: our numbers beside the papers'")
    add_compare_arguments(c)
    b = sub.add_parser("bench", help="training speed of each milestone's main model here: examples/s, "
                                     "achieved FLOP/s, share of the device's peak")
    b.add_argument("ids", nargs="*", metavar="id", help="milestones to time (default: every built one)")
    b.add_argument("--precision", default="auto", help="comma-separated precisions to time (auto, fp32, bf16, "
                                                       "fp16); auto: bf16 where native, else fp32")
    b.add_argument("--steps", type=int, default=10, help="timed training steps per model and precision "
                                                         "(after 2 warm-up steps)")
    b.add_argument("--batch-size", type=int, default=0, help="examples per step for every model (default: each "
                                                              "milestone's recipe, smaller on a CPU)")
    b.add_argument("--format", default="table", choices=("table", "markdown", "csv"))
    b.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    b.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default; 1 is often faster "
                                                         "on a CPU shared with other jobs)")
    ck = sub.add_parser("check", help="does the course work on this machine? each milestone's model trained a few "
                                      "hundred steps through its own train script, measured; report.md and "
                                      "report.json, exit status 1 on a failed line")
    ck.add_argument("ids", nargs="*", metavar="id", help="milestones to check (default: all)")
    ck.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or cuda:N; on a CPU the "
                                                     "smoke presets run, on a GPU the default ones")
    ck.add_argument("--steps", type=int, default=0, help="training steps a model (default: 300 on a GPU, 24 on "
                                                         "a CPU)")
    ck.add_argument("--compile", default="", choices=("", *COMPILE_MODES), metavar="MODE",
                    help="torch.compile mode for every model: off, default, reduce-overhead, max-autotune "
                         "(default: default on a GPU, off on a CPU)")
    ck.add_argument("--tests", default="on", choices=("on", "off"), help="run the tests marked `device` first")
    ck.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    ck.add_argument("--data-dir", default=None, help="data root with MNIST, CIFAR-10, PTB, Multi30k and Tiny "
                                                     "Shakespeare (default: $MILESTONES_DATA, else the download "
                                                     "cache); a dataset missing there skips its lines")
    ck.add_argument("--out", default=None, help="the report's directory (default: runs/check/<time>)")
    ck.add_argument("--pack", default=None, metavar="DIR", help="instead of checking: write into DIR a data root "
                                                                 "of every dataset the check reads, under 64 MiB "
                                                                 "(CIFAR-10 cut to 6,000 images), to carry to a "
                                                                 "GPU machine")
    co = sub.add_parser("course", help="the course as a guided path: the timeline, or one chapter's page "
                                       "(what changed, one command to run, what to try next)")
    co.add_argument("milestone", nargs="?", help=NAMES + "; none: the timeline")

    if argv and argv[0] in ("train", "sample") and len(argv) >= 2 and not argv[1].startswith("-"):
        args, rest = p.parse_args(argv[:2]), argv[2:]
    else:
        args, rest = p.parse_args(argv), []
    handlers = {"list": lambda: cmd_list(args), "train": lambda: cmd_train(args, rest),
                "sample": lambda: cmd_sample(args, rest), "compare": lambda: cmd_compare(args),
                "bench": lambda: cmd_bench(args), "check": lambda: cmd_check(args),
                "course": lambda: cmd_course(args)}
    try:
        exit_on_user_error(handlers[args.command])
    except BrokenPipeError:  # `... | head` closed the pipe: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
