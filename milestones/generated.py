"""Tables in markdown files that are the output of a `compare` command, so that a number can only change
through a run record.

A generated table sits between a marker that names its command and an end marker:

    <!-- compare results/ --machine AVX2 --format markdown -->
    | milestone | ... |
    <!-- /compare -->

`python -m milestones compare --update README.md milestones/*/NOTES.md` rewrites every such table from the
records; `stale(path)` (the test over README.md and every NOTES.md) lists the ones that differ. The GPU
estimates are generated the same way from their record: `<!-- estimate results/estimates/h100.json -->` ...
`<!-- /estimate -->` (milestones/estimate.py).
"""

import contextlib
import io
import os
import re
import shlex
from pathlib import Path

from common.errors import UserError

BLOCK = re.compile(r"(<!-- (?P<kind>compare|estimate) (?P<args>.*?) -->\n)(?P<body>.*?)(<!-- /(?P=kind) -->)", re.S)


def render(args: str, root: Path | None = None, kind: str = "compare") -> str:
    """The output of `python -m milestones compare <args>`, run from `root` (the repository): a table, or one
    line saying why there is none yet."""
    from common.cli import Parser

    from .compare import add_compare_arguments, table_of

    if kind == "estimate":
        from .estimate import table
        return table((root or Path.cwd()) / args.strip())

    parser = Parser(prog="compare")
    add_compare_arguments(parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = parser.parse_args(shlex.split(args))
    except SystemExit:  # a flag compare does not take
        raise UserError(f"compare {args}: {err.getvalue().strip().removeprefix('error: ')}") from None
    if parsed.update or parsed.plot or parsed.history:
        raise UserError(f"a generated table's command must print a table: compare {args}")
    cwd = Path.cwd()
    try:
        if root is not None:
            os.chdir(root)
        return table_of(parsed) + "\n"
    except UserError as e:  # nothing recorded yet: the table says so, in one line
        return f"(no table: {e})\n"
    finally:
        os.chdir(cwd)


def blocks(text: str):
    """(command arguments, current body) of each generated table in a markdown text."""
    return [(m.group("args"), m.group("body")) for m in BLOCK.finditer(text) if m.group("kind") == "compare"]


def regenerate(text: str, root: Path | None = None) -> str:
    """The text with every generated table replaced by its command's output now."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("args"), root, m.group("kind")) + m.group(5), text)


def stale(path, root: Path | None = None) -> list[str]:
    """The commands whose table in `path` differs from what they print now (empty: the file is up to date)."""
    text = Path(path).read_text(encoding="utf-8")
    return [m.group("args") for m in BLOCK.finditer(text)
            if m.group("body") != render(m.group("args"), root, m.group("kind"))]


def update(paths) -> list[tuple[str, int]]:
    """Rewrite the generated tables of each file; (path, number of tables) for each."""
    done = []
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot read {p}: {e.strerror}") from None
        new = regenerate(text)
        if new != text:
            p.write_text(new, encoding="utf-8")
        done.append((str(p), len(BLOCK.findall(text))))
    return done
