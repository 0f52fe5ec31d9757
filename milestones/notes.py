"""A chapter's "## Course" section in its NOTES.md: its text, its one line, its Run-it command. Read by `course`
(which prints it) and by `compare --course` (which finds the records of the Run-it command)."""

from pathlib import Path

from common.errors import UserError

from . import ROOT

HEADING = "## Course"
ONE_LINE = "**In one line:**"


def notes_path(mid: str, root: Path = ROOT) -> Path:
    path = root / mid / "NOTES.md"
    try:
        return path.relative_to(Path.cwd())  # shorter in messages when run from the repository
    except ValueError:
        return path


def section(mid: str, root: Path = ROOT) -> str:
    """The text of `mid`'s "## Course" section (heading excluded, up to the next `## ` heading or the end of the
    file), stripped of blank lines at both ends. A chapter without one is a UserError saying so."""
    path = notes_path(mid, root)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise UserError(f"{mid} has no NOTES.md ({path}), so no course section to show") from None
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == HEADING) + 1
    except StopIteration:
        raise UserError(f"{mid}'s NOTES.md has no \"{HEADING}\" section yet; read {path} itself") from None
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip("\n")


def one_line(mid: str, root: Path = ROOT) -> str:
    """What the chapter changed, in the words of its section's first line (without the marker)."""
    first = section(mid, root).split("\n", 1)[0]
    if not first.startswith(ONE_LINE):
        raise UserError(f"{mid}'s course section should begin with \"{ONE_LINE} ...\" ({notes_path(mid, root)})")
    return first[len(ONE_LINE):].strip()


def run_it(mid: str, root: Path = ROOT) -> str | None:
    """The chapter's "Run it" command as `train <id> ...` (the first command after the **Run it** line, its
    continuation lines joined), or None for a chapter without one."""
    lines = section(mid, root).splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("**Run it**")), None)
    if start is None:
        return None
    words = []
    for line in lines[start + 1:]:
        if words or line.strip().startswith("python -m milestones "):
            words.append(line.strip().rstrip("\\").strip())
            if not line.rstrip().endswith("\\"):
                break
    return " ".join(" ".join(words).split()[3:]) or None  # after "python -m milestones"
