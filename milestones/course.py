"""`python -m milestones course [id]`: the course as a guided path.

The text is not here: each chapter's "## Course" section lives at the end of its own NOTES.md, beside the
numbers it quotes, so it cannot drift from them. A section begins with one line, `**In one line:** ...`,
which is what the timeline shows for that chapter; the rest is printed as written.
"""

import re
import textwrap
from pathlib import Path

from common.errors import UserError

from . import COURSE, ROOT, meta
from .notes import HEADING, ONE_LINE, notes_path, one_line, run_it, section  # noqa: F401 (the course's text)

def timeline(root: Path = ROOT) -> str:
    """The opening page: why the chapters come in this order, then one line per chapter (the span of its papers,
    its id, what it changed), then where to start."""
    rows = []
    for mid in COURSE:
        info = meta(mid)
        try:
            what = one_line(mid, root)
        except UserError:
            what = f"{info.get('title', '')} (no course section yet)"
        rows += [f"{info.get('years', info['year']):<9}  {mid}", f"{'':11}{what}"]
    first = COURSE[0].split("_", 1)[0]
    return "\n".join([
        "The course follows the story, not the calendar: each chapter needs the one before it. The",
        "LSTM (1997) comes after ResNet (2015) because its language models lead straight into the",
        "Transformer; the generative models (2013-2020) come last because the diffusion model's U-Net",
        "is built from ResNet's blocks and the Transformer's attention.", "",
        "years      chapter, and what it changed", *rows, "",
        f"Start with `python -m milestones course {first}`: what the paper changed, one command to run,",
        "what you should see, and what to try next."])


RESULTS = ROOT.parent / "results"


def plain(text: str) -> str:
    """Markdown as a terminal should show it: bold and italic marks dropped, links as `text (target)`."""
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*/])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])", r"\1", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1 (\2)", text)


LAPTOP = "AVX2"  # the CPU class a Run-it is sized for: five minutes on two of its cores, in fp32


def recorded(mid: str, results: Path = RESULTS) -> str | None:
    """What the records in results/ say the chapter's Run-it command gives (read now, so the course can never
    quote a number that no record holds), as `compare --course` prints it; None when nothing is recorded."""
    from .compare import compare, course_only, load_summaries, machine_of

    try:
        cards = course_only([c for c in load_summaries(str(results)) if c.get("milestone") == mid])
        arm = ["arm"] if any(c.get("arm") for c in cards) else []  # a multi-arm Run-it: name each row's arm
        # the records on the laptop class the Run-its are sized for (AVX2, timed alone), where there are any
        laptop = LAPTOP if any(LAPTOP in machine_of(c) for c in cards) else None
        return compare(str(results), course=True, filters=[f"{mid}/"], machine=laptop,
                       show=[*arm, "metric", "value", "paper_value", "precision", "wall_seconds", "machine"])
    except UserError:
        return None


def on_a_gpu(mid: str, results: Path = RESULTS) -> list[str]:
    """The chapter's GPU commands, each with the paper's result and its estimated H100 time (from the estimates'
    record, results/estimates/h100.json; milestones/estimate.py says how they are made)."""
    from .estimate import duration, published

    rows = [r for r in published(results / "estimates" / "h100.json") or () if r["milestone"] == mid]
    bound = {"launches": "kernel launches", "compute": "compute"}
    lines = [f"  python -m milestones {r['command']}\n      the paper: {r['expect']}\n      one H100: "
             f"{'at least' if r['at_least'] else 'about'} {duration(r['hours'])} ({r['steps']:,} steps, bound by "
             f"{bound[r['bound']]})" for r in rows]
    return ["", "On a GPU (times estimated from FLOPs and kernels a step, not measured; evaluation excluded;",
            "`python -m milestones check` tries the course on yours first):", "", *lines] if lines else []


def ran_on(mid: str, results: Path = RESULTS) -> list[str]:
    """The machine classes of the chapter's records ("AVX512-BF16 CPU", a GPU's name)."""
    from .compare import load_summaries, machine_of

    try:
        return sorted({machine_of(c) for c in load_summaries(str(results)) if c.get("milestone") == mid})
    except UserError:
        return []


def chapter(mid: str, root: Path = ROOT, results: Path = RESULTS) -> str:
    """The page `course <id>` prints: a title line, the chapter's section, what the records say its Run-it command
    gives, and the way on."""
    info = meta(mid)
    body = section(mid, root)
    if body.startswith(ONE_LINE):
        body = body[len(ONE_LINE):].strip()
    i = COURSE.index(mid)
    body = plain(body[:1].upper() + body[1:])
    nxt = (f"Next chapter: `python -m milestones course {COURSE[i + 1].split('_', 1)[0]}`" if i + 1 < len(COURSE)
           else "That was the last chapter: `python -m milestones compare` puts your runs side by side.")
    table = recorded(mid, results)
    said = ["", "What the Run-it command gave when we ran it (read from its records in results/):", "", table] \
        if table else []
    machines = ran_on(mid, results)
    if machines and "(Results" in body:  # the numbers quoted from Results depend on the machine and precision
        said += ["", *textwrap.wrap(f"Numbers marked (Results) come from our records, run on: {', '.join(machines)}; "
                                    "the Results tables of the chapter's NOTES.md give each one's machine and "
                                    "precision.", 100)]
    title = f"{mid} ({info.get('years', info['year'])}): {info.get('title', '')}"
    return "\n".join([title, "", body, *said, *on_a_gpu(mid, results), "",
                      f"Full notes: milestones/{mid}/NOTES.md", nxt])
