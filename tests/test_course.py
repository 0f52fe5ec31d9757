"""`python -m milestones course [id]`: every chapter's "## Course" section exists, fits two screens, and
every command in it is one its milestone's train script accepts."""

import contextlib
import importlib
import json
import inspect
import re
import shlex

import pytest

from common.errors import UserError
from milestones import COURSE, is_built, meta
from milestones import course
from milestones.__main__ import _resolve
from milestones.__main__ import main as cli

BUILT = [m for m in COURSE if is_built(m)]
MAX_LINES, MAX_COLS = 60, 100


def commands(text: str) -> list[str]:
    """The `python -m milestones train ...` commands of a section, one per line (a trailing backslash
    continues a command on the next line)."""
    out, pending = [], None
    for line in text.splitlines():
        s = line.strip()
        if pending is not None:
            s, pending = pending + " " + s, None
        elif not s.startswith("python -m milestones train "):
            continue
        if s.endswith("\\"):
            pending = s[:-1].strip()
        else:
            out.append(s)
    assert pending is None, f"a command ends in a backslash with nothing after it: {pending}"
    return out


@pytest.mark.parametrize("mid", BUILT)
def test_every_chapter_has_a_course_section_that_fits_two_screens(mid):
    text = course.section(mid)
    assert text.startswith(course.ONE_LINE) and course.one_line(mid)
    page = course.chapter(mid).splitlines()
    assert len(page) <= MAX_LINES, f"{mid}: {len(page)} lines"
    wide = [line for line in page if len(line) > MAX_COLS]
    assert not wide, f"{mid}: lines over {MAX_COLS} columns: {wide}"
    assert "Run it" in text and "Now try" in text
    assert len(commands(text)) >= 3, "one command to run and at least two variations"


@pytest.mark.parametrize("mid", BUILT)
def test_every_number_in_a_course_section_is_in_the_rest_of_its_notes(mid):
    """The section copies its numbers from the chapter's measured sections; it never has numbers of its own."""
    notes = course.notes_path(mid).read_text(encoding="utf-8")
    body = course.section(mid)
    rest = notes.replace(body, "")
    numbers = set(re.findall(r"\d+(?:[.,]\d+)+%?|\d+%", body))
    missing = sorted(n for n in numbers if n not in rest)
    assert not missing, f"{mid}'s course section has numbers its NOTES.md does not: {missing}"


def parsed_config(mid: str, argv: list[str], monkeypatch):
    """Run the milestone's real train command line (train_command: presets, parser, the checks of flags that
    apply to one experiment) up to the point where training would start, and return the resolved config."""
    train = importlib.import_module(f"milestones.{mid}.train")
    seen = []

    def stop_here(cfg, rt, argv_):
        check = getattr(train, "check", None)  # the milestone's own range and model checks, when it has them
        if check is not None:
            check(*(cfg, argv_)[:len(inspect.signature(check).parameters)])
        seen.append(cfg)

    monkeypatch.setattr("common.device.setup", lambda *a, **k: contextlib.nullcontext())
    for name in list(train.EXPERIMENTS):
        monkeypatch.setitem(train.EXPERIMENTS, name, stop_here)
    train.main(argv)
    assert len(seen) == 1
    return train, seen[0]


@pytest.mark.parametrize("mid", BUILT)
def test_every_command_in_a_course_section_is_accepted_by_its_train_script(mid, monkeypatch, capsys):
    cmds = commands(course.section(mid))
    for cmd in cmds:
        words = shlex.split(cmd)
        assert words[:4] == ["python", "-m", "milestones", "train"], cmd
        assert _resolve(words[4]) == mid, f"{cmd}: a command of another chapter"
        argv = words[5:]
        try:
            train, cfg = parsed_config(mid, argv, monkeypatch)
        except SystemExit as e:  # argparse (unknown flag, bad choice) or a UserError: exit status 2
            pytest.fail(f"{cmd}: refused (exit {e.code}): {capsys.readouterr().err.strip()}")
        assert cfg.preset == "quick" or cfg.experiment in train.EXPERIMENTS, cmd
        assert "--preset quick" in cmd or "--experiment" in cmd, f"{cmd}: names no preset or experiment"
    assert "--preset quick" in cmds[0], "the command to run first is the laptop one"


def test_a_bad_flag_is_caught_by_the_check():
    """The flag check above can fail: a made-up flag is refused by the same machinery."""
    with pytest.raises(SystemExit) as e:
        importlib.import_module("milestones.01_dnn.train").main(["--preset", "quick", "--no-such-flag"])
    assert e.value.code == 2


def test_commands_join_continued_lines():
    text = "x\n    python -m milestones train 02 --preset quick \\\n        --lr 0.01\n  python -m milestones list\n"
    assert commands(text) == ["python -m milestones train 02 --preset quick --lr 0.01"]


def test_course_05_prints_its_section(capsys):
    cli(["course", "05"])
    out = capsys.readouterr().out
    body = course.plain(course.section("05_lstm")[len(course.ONE_LINE):].strip())
    assert out.startswith("05_lstm (1997-2014)")
    assert body[1:] in out  # (the first letter is capitalised on the page)
    assert "python -m milestones train 05_lstm --experiment adding --preset quick" in out
    assert "python -m milestones course 06" in out
    assert len(out.splitlines()) <= MAX_LINES and max(map(len, out.splitlines())) <= MAX_COLS


@pytest.mark.parametrize("alias", ["dnn", "01", "01_dnn"])
def test_course_accepts_the_ids_train_accepts(alias, capsys):
    cli(["course", alias])
    assert capsys.readouterr().out.startswith("01_dnn (1986)")


def test_course_without_id_is_the_timeline(capsys):
    cli(["course"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if re.match(r"\d{4}(-\d{4})? +\d\d_", line)]
    assert [r.split()[1] for r in rows] == COURSE
    for r, mid in zip(rows, COURSE):
        assert r.startswith(meta(mid)["years"]) and meta(mid)["years"].startswith(str(meta(mid)["year"]))
        assert course.one_line(mid) in lines[lines.index(r) + 1]  # what it changed, under it
    assert any("python -m milestones course 01" in line for line in lines)
    assert max(map(len, lines)) <= MAX_COLS


def test_unknown_id_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["course", "99"])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("error: unknown milestone")


def test_a_chapter_without_a_course_section_says_so(tmp_path):
    (tmp_path / "01_dnn").mkdir()
    (tmp_path / "01_dnn" / "NOTES.md").write_text("# 01\n\n## What the paper showed\n\ntext\n")
    with pytest.raises(UserError, match='no "## Course" section'):
        course.section("01_dnn", root=tmp_path)
    with pytest.raises(UserError, match="no NOTES.md"):
        course.section("02_cnn_lenet", root=tmp_path)
    assert "(no course section yet)" in course.timeline(root=tmp_path)


def test_the_section_ends_at_the_next_heading(tmp_path):
    (tmp_path / "01_dnn").mkdir()
    (tmp_path / "01_dnn" / "NOTES.md").write_text("# 01\n\n## Course\n\n**In one line:** x.\n\nbody\n\n## Later\n\nno\n")
    assert course.section("01_dnn", root=tmp_path) == "**In one line:** x.\n\nbody"
    assert course.one_line("01_dnn", root=tmp_path) == "x."


@pytest.mark.parametrize("mid", BUILT)
def test_a_chapter_page_prints_no_markdown_marks(mid):
    page = course.chapter(mid)
    assert "**" not in page and not re.search(r"(?<![\w*/])\*\w[^*\n]*\w\*(?!\w)", page), mid


def test_plain_drops_emphasis_but_not_globs_or_products():
    assert course.plain("**Run it** (*Results*), see [notes](NOTES.md)") == "Run it (Results), see notes (NOTES.md)"
    assert course.plain("milestones/*/NOTES.md and 2 * 3 * 4") == "milestones/*/NOTES.md and 2 * 3 * 4"


def test_a_chapter_page_prints_what_the_records_say_its_run_it_gives(tmp_path):
    """The page's numbers for the Run-it command are read from results/ when it is printed."""
    d = tmp_path / "01_dnn" / "run"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(dict(
        milestone="01_dnn", model="mlp-6-2-1", metric="sweeps_to_solve (median)", value=1234, paper_value=1425,
        precision="fp32", train_seconds=20.0, seed=0, preset="quick", dataset="d",
        machine={"class": "AVX2 CPU"})))
    (d / "config.json").write_text(json.dumps(dict(milestone="01_dnn", argv=course.run_it("01_dnn").split()[2:],
                                                   config=dict(experiment="symmetry"))))
    page = course.chapter("01_dnn", results=tmp_path)
    assert "1,234" in page and "AVX2 CPU" in page and "results/" in page
    assert "1,234" not in course.chapter("01_dnn", results=tmp_path / "none")


def test_the_opening_page_says_why_the_order_and_gives_each_chapters_span():
    from milestones.course import timeline
    page = timeline()
    assert "not the calendar" in page and "2013-2020" in page and "1997-2014" in page
    assert all(mid in page for mid in COURSE) and "**" not in page


def test_a_chapter_page_gives_its_gpu_commands_with_the_papers_result_and_an_estimated_h100_time():
    from milestones.course import chapter
    page = chapter("04_resnet")
    gpu = page[page.index("On a GPU"):]
    assert "python -m milestones train 04_resnet\n" in gpu and "8.75%" in gpu and "one H100: about" in gpu
    assert "estimated" in gpu and "not measured" in gpu


def test_a_page_quoting_results_names_the_machine_they_ran_on():
    page = course.chapter("04_resnet")
    said = " ".join(page.split())  # the sentence is wrapped at 100 columns
    assert "(Results)" in page and "Numbers marked (Results) come from our records, run on: " in said
    assert "AVX512-BF16 CPU" in said.split("run on: ")[1].split(";")[0]
