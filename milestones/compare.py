"""`python -m milestones compare`: every run's summary.json, one row each, beside the paper's number."""

import csv
import functools
import io
import json
import re
import sys
from pathlib import Path

from common.config import _compile_mode
from common.errors import UserError

from . import COURSE, resolve_config
from .arms import rows as arm_rows
from .notes import run_it

# key -> title. `experiment: model` is one cell (the arm's name for a multi-arm run); `time` is train_seconds.
COLUMNS = {"milestone": "milestone", "what": "experiment: model", "preset": "preset", "metric": "metric",
           "value": "ours", "paper_value": "paper", "precision": "prec", "train_seconds": "time",
           "cpu_seconds": "CPU", "wall_seconds": "wall", "seconds_to_target": "to target",
           "seeds": "seeds", "load": "load", "dataset": "dataset", "params": "params",
           "examples_per_second": "ex/s", "device": "device", "machine": "machine", "world_size": "procs",
           "seed": "seed", "command": "train command", "arm": "arm", "run": "run"}
NARROW = ("milestone", "what", "preset", "metric", "value", "paper_value", "precision", "train_seconds")
TERMINAL_DROPS = ("train_seconds",)  # not in the 100-column table, so arms fit (--wide, --show add it)
KEEP = ("milestone", "metric", "value")  # never cut: the other columns are shortened first
WIDTH = 100  # a terminal's columns, which the plain tables fit unless --wide
PERCENT = ("test_error", "top1_error", "train_error", "training error", "val_error", "exact_match", "accuracy")


def _read_json(path: Path):
    try:
        obj = json.loads(path.read_text())
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return obj
    except (OSError, ValueError) as e:  # a half-written or foreign file is skipped, not fatal
        print(f"warning: skipping {path}: unreadable ({type(e).__name__})", file=sys.stderr)
        return None


COURSE_FORM = ("--out-dir", "--data-dir", "--threads", "--seed")  # what a record and a Run-it may differ in


# Flags renamed since a record was made, the recipe unchanged (a test pins it value by value): the command shown is
# the one that runs it today.
RENAMED = {("02_cnn_lenet", "--experiment", "fast"): ("--preset", "fast")}


NOT_RECIPE = ("preset", "experiment", "threads", "out_dir", "data_dir", "resume", "seed")  # not what a preset sizes


def _flag_value(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


@functools.lru_cache(maxsize=None)
def _today(milestone: str, argv: tuple) -> dict | None:
    try:
        cfg = resolve_config(milestone, list(argv))
    except (UserError, SystemExit, ImportError):  # a flag or preset gone since: nothing to compare with
        return None
    return vars(cfg)


def recipe_changes(config: dict, argv: list) -> list[str]:
    """The flags that make `argv` run the record's recipe today: one `--name value` for each setting the record
    ran with that today's presets set otherwise (a preset re-sized since the record was made). Settings today's
    Config lacks, or the record lacks, are left alone."""
    ran, today = config.get("config") or {}, _today(config["milestone"], tuple(argv))
    if not today:
        return []
    changed = []
    for name, value in today.items():
        if name not in ran or ran[name] is None or name in NOT_RECIPE or value == "auto":  # auto: set at run time
            continue
        if name == "compile":  # older records wrote False for off
            value, ran_value = _compile_mode(str(value)), _compile_mode(str(ran[name]))
        else:
            ran_value = ran[name]
        if ran_value != value:
            changed += [f"--{name.replace('_', '-')}", _flag_value(ran_value)]
    return changed


def command_of(config: dict, drop=("--out-dir", "--data-dir", "--threads")) -> str | None:
    """The train command a run record came from, as it runs today: in today's flags (RENAMED), with the flags a
    preset re-sized since then needs to run the record's recipe (recipe_changes), and without where it wrote
    (--out-dir) or read its data, and how many threads it used (the result does not depend on them; the
    record's machine block keeps them)."""
    argv = list(config.get("argv") or [])
    for i in range(len(argv) - 1):
        argv[i:i + 2] = RENAMED.get((config.get("milestone"), *argv[i:i + 2]), argv[i:i + 2])
    if not argv or "milestone" not in config:
        return None
    if config.get("config"):
        argv += recipe_changes(config, argv)
    drop = set(drop)
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in drop:
            skip = True
            continue
        if a.split("=", 1)[0] in drop:
            continue
        kept.append(a)
    return " ".join(["train", config["milestone"], *kept])


def load_summaries(runs: str) -> list[dict]:
    """Every summary.json under `runs`, with what its config.json adds (experiment, command, machine), split into
    one row per arm for multi-arm runs."""
    root = Path(runs)
    if not root.is_dir():
        raise UserError(f"no runs directory at {root} (train something first, or pass a directory)")
    cards = []
    for path in sorted(root.rglob("summary.json")):
        card = _read_json(path)
        if card is None:
            continue
        config = _read_json(path.parent / "config.json") if (path.parent / "config.json").exists() else None
        if config:
            card.setdefault("experiment", (config.get("config") or {}).get("experiment"))
            card.setdefault("command", command_of(config))
            card["_course"] = command_of(config, COURSE_FORM)
            card.setdefault("machine", config.get("machine"))
        card["run"] = str(path.parent.relative_to(root))
        cards += arm_rows(card)
    order = {m: i for i, m in enumerate(COURSE)}
    key = lambda c: (order.get(c.get("milestone"), len(order)), str(c.get("milestone", "")),
                     str(c.get("experiment") or ""), str(c.get("preset") or ""), c["run"], str(c.get("model", "")))
    return sorted(cards, key=key)


def machine_of(card: dict) -> str:
    """The machine class a card ran on ("AVX2 CPU", "NVIDIA H100 80GB HBM3"); "unrecorded" for old cards."""
    m = card.get("machine")
    return m.get("class", "unrecorded") if isinstance(m, dict) else "unrecorded"


def is_percent(metric) -> bool:
    return isinstance(metric, str) and metric.lower().startswith(PERCENT)


def _load(card: dict):
    """The higher 1-minute load average of the run's start and end (how busy the machine was)."""
    m = card.get("machine")
    if not isinstance(m, dict):
        return None
    loads = [x[0] for x in (m.get("load_start"), m.get("load_end")) if isinstance(x, list) and x]
    return max(loads) if loads else None


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _duration(s) -> str:
    if not is_number(s):
        return "-"
    return f"{s:.0f} s" if s < 100 else f"{s / 60:.1f} min" if s < 6000 else f"{s / 3600:.1f} h"


def _value(v, percent: bool) -> str:
    if v is None:
        return "-"
    if percent and is_number(v):
        return f"{100 * v:.2f}%"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def cell(card: dict, key: str) -> str:
    """How `compare` prints one field of a row."""
    percent = is_percent(card.get("metric"))
    if key == "what":
        exp, model = card.get("experiment"), card.get("model")
        return f"{exp}: {model}" if exp and model and exp != model else str(model or exp or "-")
    if key == "value" and isinstance(card.get("seed_values"), list):
        vals = card["seed_values"]
        lo, hi = min(vals), max(vals)
        mean = sum(vals) / len(vals)
        if percent:
            return f"{100 * mean:.2f}% ({100 * lo:.2f}-{100 * hi:.2f}, {len(vals)} seeds)"
        return f"{mean:.4g} ({lo:.4g}-{hi:.4g}, {len(vals)} seeds)"
    if key in ("value", "paper_value"):
        return _value(card.get(key), percent)
    if key == "command":  # `python -m milestones train` is the same for every row; the arm tells a run's rows apart
        cmd = card.get("command")
        return "-" if not cmd else cmd.removeprefix("train ") + (f" [{card['arm']}]" if card.get("arm") else "")
    if key in ("train_seconds", "cpu_seconds", "wall_seconds", "seconds_to_target", "seconds_to_result"):
        return _duration(card.get(key))
    if key == "machine":
        return machine_of(card)
    if key == "load":
        v = _load(card)
        return "-" if v is None else f"{v:.1f}"
    if key == "seeds":
        return str(len(card["seed_values"])) if isinstance(card.get("seed_values"), list) else "1"
    v = card.get(key)
    if v is None:
        return "-"
    if key == "params" and is_number(v):
        return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{int(v):,}"
    if key == "examples_per_second" and is_number(v):
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _median(cards: list[dict], key: str):
    """The (upper) median of a numeric field over cards that record it; None if none does."""
    values = sorted(c[key] for c in cards if is_number(c.get(key)))
    return values[len(values) // 2] if values else None


def merge_seeds(cards: list[dict]) -> list[dict]:
    """Runs that differ only in their seed (same milestone, experiment, model, preset, metric, precision and
    machine) become one row: the mean, the range, the number of seeds, and the median times."""
    groups = {}
    for c in cards:
        k = tuple(str(c.get(f)) for f in ("milestone", "experiment", "model", "preset", "metric", "precision",
                                           "dataset")) + (machine_of(c),)
        groups.setdefault(k, []).append(c)
    out = []
    for group in groups.values():
        vals = [c.get("value") for c in group]
        if len(group) == 1 or not all(is_number(v) for v in vals) or len({c.get("seed") for c in group}) < len(group):
            out += group
            continue
        command = re.sub(r" --seed \S+", "", group[0].get("command") or "") or None
        row = dict(group[0], seed_values=vals, value=sum(vals) / len(vals), command=command,
                   seed=",".join(str(c.get("seed")) for c in group), train_seconds=_median(group, "train_seconds"),
                   cpu_seconds=_median(group, "cpu_seconds"), run=group[0]["run"] + " +" + str(len(group) - 1))
        out.append(row)
    return out


COURSE_SHOW = ("command", "metric", "value", "paper_value", "precision", "wall_seconds")  # Run-its: timed alone


@functools.lru_cache(maxsize=1)
def run_it_commands() -> dict:
    """{milestone: its course Run-it command in a record's normal form (no --threads, --seed or paths)}."""
    wanted = {}
    for mid in COURSE:
        try:
            command = run_it(mid)
        except UserError:
            continue
        if command:  # "train <id> flags...": the same normal form as a record's
            wanted[mid] = command_of(dict(milestone=mid, argv=command.split()[2:]), COURSE_FORM)
    return wanted


def is_run_it(card: dict) -> bool:
    """Whether a record is of its chapter's Run-it command (--filter/--exclude match it as `run-it`)."""
    return bool(card.get("_course")) and card["_course"] == run_it_commands().get(card.get("milestone"))


def course_only(cards: list[dict]) -> list[dict]:
    """The records of each chapter's "Run it" command (notes.run_it; any seed), labelled with that command after
    `train` (and the arm, for a multi-arm run)."""
    return [dict(c, command=c["_course"]) for c in cards if is_run_it(c)]


def compare(runs: str = "runs", fmt: str = "table", wide: bool = False, columns=(), filters=(), machine=None,
            seeds: bool = False, show=(), course: bool = False, exclude=()) -> str:
    """The table: one row per run (per arm of a multi-arm run), in course order, one table per machine class.
    `columns` adds summary keys as columns after `ours` (e.g. 07's fcd, kid: one yardstick for every generator;
    `command`: the train command of the record); `filters` keeps the matching runs only; `machine` keeps one
    machine class (a substring of it, e.g. AVX2); `seeds` merges runs that differ only in their seed; `show`
    gives the columns exactly, in order (column names or summary keys); `course` keeps the records of each
    chapter's "Run it" command (its seeds merged): what `python -m milestones course NN` promises."""
    names = lambda c: (f"{c.get('milestone', '')}/{c.get('model', '')}", c["run"],
                       f"{c.get('milestone', '')}/{c.get('experiment', '')}", f"preset={c.get('preset')}",
                       *(["run-it"] if is_run_it(c) else []))
    cards = [c for c in load_summaries(runs)
             if matches(filters, *names(c)) and not (exclude and matches(exclude, *names(c)))]
    if course:
        cards, seeds, show = course_only(cards), True, list(show) or COURSE_SHOW
    if machine:
        classes = sorted({machine_of(c) for c in cards})
        cards = [c for c in cards if machine.lower() in machine_of(c).lower()]
        if not cards:
            raise UserError(f"no run under {runs} ran on a machine matching {machine!r}; the runs there ran on: "
                            f"{', '.join(classes) or 'nothing'}")
    if not cards:
        what = f" matching {' or '.join(filters)}" if filters else ""
        raise UserError(f"no summary.json{what} under {runs}: finish a training run first")
    unknown = [k for k in (*columns, *show) if k not in COLUMNS and all(k not in c for c in cards)]
    if unknown:
        raise UserError(f"no run here records {', '.join(unknown)} (keys of summary.json, e.g. fcd, test_error)")
    if seeds:
        cards = merge_seeds(cards)
    keys = list(COLUMNS) if wide or fmt == "csv" else \
        [k for k in NARROW if fmt == "markdown" or k not in TERMINAL_DROPS]
    at = keys.index("value") + 1
    keys = keys[:at] + [k for k in columns if k not in keys] + keys[at:]
    keys = list(show) or keys
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(keys)
        for c in cards:
            w.writerow([c.get(k, "") if k not in ("what", "machine", "load") else cell(c, k) for k in keys])
        return buf.getvalue().rstrip("\n")
    header = [COLUMNS.get(k, k) for k in keys]
    groups = {}
    for c in cards:
        groups.setdefault(machine_of(c), []).append(c)
    out = []
    for name, group in groups.items():
        rows = [[cell(c, k) for k in keys] for c in group]
        keep = [i for i, k in enumerate(keys) if k in KEEP or (k == "command" and show)]
        table = format_table(header, rows, None if wide else WIDTH, keep, markdown=fmt == "markdown")
        out.append(table if len(groups) == 1 else f"{'####' if fmt == 'markdown' else 'On'} {name}"
                   + ("" if fmt == "markdown" else ":") + "\n\n" + table)
    return "\n\n".join(out)


def add_compare_arguments(c) -> None:
    """The `compare` sub-command's flags (its parser lives in __main__; generated.py parses the same ones)."""
    c.add_argument("dir", nargs="?", metavar="RUNS", help="directory searched for summary.json files (default "
                                                           "runs/; results/ holds the records behind our numbers)")
    c.add_argument("--runs", help="the same as RUNS")
    c.add_argument("--machine", metavar="CLASS", help="only the runs of one machine class (e.g. AVX2, AMX, H100); "
                                                      "without it, one table per class")
    c.add_argument("--seeds", action="store_true", help="one row for runs that differ only in their seed: the "
                                                        "mean, (min-max) and how many seeds")
    c.add_argument("--course", action="store_true", help="the records of each chapter's \"Run it\" command "
                                                         "(`course NN`), seeds merged: what the course promises")
    c.add_argument("--show", metavar="KEY,KEY", default="", help="exactly these columns, in this order (e.g. "
                                                                  "milestone,command,value,train_seconds)")
    c.add_argument("--update", nargs="+", metavar="FILE.md", help="regenerate the tables marked `<!-- compare ... "
                                                                  "-->` in these markdown files (README, NOTES)")
    c.add_argument("--format", default="table", choices=("table", "markdown", "csv"))
    c.add_argument("--wide", action="store_true", help="every column, uncut (the table otherwise fits 100 columns)")
    c.add_argument("--plot", metavar="METRIC", help="overlay the runs' learning curves of METRIC from metrics.jsonl "
                                                    "(e.g. loss, error, or split:metric like valid:loss) in one PNG")
    c.add_argument("--x", choices=("step", "epoch", "time"), help="--plot's x axis: step (default), epoch, or "
                                                                  "wall-clock seconds (the rows' time field)")
    c.add_argument("--filter", nargs="+", metavar="SUBSTR", help="only the runs whose milestone/model, "
                   "milestone/experiment, run directory or preset=NAME contains one of these, or run-it: the "
                   "records of the chapters' Run-it commands (table or --plot)")
    c.add_argument("--exclude", nargs="+", metavar="SUBSTR", help="leave out the runs these would match as "
                                                                  "--filter (e.g. preset=smoke)")
    c.add_argument("--columns", metavar="KEY,KEY", default="", help="summary.json keys shown as extra columns, e.g. "
                                                                   "fcd,kid,confident_fraction,class_entropy for 07")
    c.add_argument("--history", action="store_true", help="draw the course: each paper's parameters and training "
                                                          "compute against the year, beside our runs'")
    c.add_argument("--out", metavar="FILE.png", help="where --plot or --history writes its PNG (default "
                                                     "RUNS/compare-<metric>.png, RUNS/compare-history.png)")


def runs_dir(args) -> str:
    """RUNS or --runs (one of them), default runs/; stored back in args.runs."""
    if args.dir and args.runs and args.dir != args.runs:
        raise UserError(f"two runs directories given ({args.dir} and --runs {args.runs}): give one")
    args.runs = args.dir or args.runs or "runs"
    return args.runs


def table_of(args) -> str:
    """The table `compare` prints for parsed flags."""
    return compare(runs_dir(args), args.format, args.wide, [k for k in args.columns.split(",") if k],
                   args.filter or (), args.machine, args.seeds, [k for k in args.show.split(",") if k], args.course,
                   args.exclude or ())


def squeeze(x: str, w: int) -> str:
    """A cell cut to w characters, ending in '~'; an 'experiment: model:arm' cell keeps its arm (what tells the
    rows of one experiment apart) and gives up the experiment's letters first."""
    if len(x) <= w:
        return x
    head, _, arm = x.rpartition(":")
    arm, exp = arm.strip(), head.split(":", 1)[0]
    if head and 1 <= w - len(arm) - 2 < len(exp):
        return f"{exp[:w - len(arm) - 2]}~:{arm}"
    if head and len(exp) + len(arm) + 2 <= w:
        return f"{exp}: {arm}"
    return x[:w - 1] + "~"


def format_table(header, rows, width: int = None, keep=(), markdown: bool = False) -> str:
    """Plain-text columns padded to the widest cell, or a markdown table; with `width`, the plain table's widest
    columns other than `keep` are cut (squeeze) until a line fits."""
    rows = [[str(x) for x in r] for r in rows]
    if markdown:  # rendered by a browser, which wraps: never cut (and unpadded, which renders the same)
        line = lambda r: "| " + " | ".join(r) + " |"
        return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    floor = [widths[j] if j in keep else max(min(len(h), 6), 5) for j, h in enumerate(header)]
    while width and sum(widths) + 2 * (len(widths) - 1) > width:
        i = max(range(len(widths)), key=lambda j: widths[j] - floor[j])
        if widths[i] <= floor[i]:
            break
        widths[i] -= 1
    line = lambda r: "  ".join(squeeze(str(x), w).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def matches(filters, *names: str) -> bool:
    """--filter (table and --plot alike): a run is kept when one of its names (milestone/model, run directory)
    contains one of the substrings; no filters keep every run."""
    return not filters or any(f in name for f in filters for name in names)
