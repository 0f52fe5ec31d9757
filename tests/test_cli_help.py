"""The command line's help is short and true (issue 25, item 4): `train <id> --help` fits two screens, shows
the values the chosen preset and experiment will use, explains every experiment and preset in whole sentences;
the model-name aliases work; `sample` takes one set of flags for every generative milestone."""

import contextlib
import importlib
import re

import pytest

from common.config import _described, _preset_names
from common.sample_cli import SHARED
from milestones import COURSE, presets_of
from milestones.__main__ import ALIASES, _resolve
from milestones.__main__ import main as cli

HELP_LINES = 120  # about two 60-line screens at 80 columns (06, the longest, has 116)


def _train(mid):
    return importlib.import_module(f"milestones.{mid}.train")


def _presets(mid, argv):
    t = _train(mid)
    return presets_of(t, argv)


def _help(mid, argv, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as e:
        _train(mid).main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _config(mid, argv, monkeypatch):
    """The config `train <mid> <argv>` would train with (stopped where training would start)."""
    t, seen = _train(mid), []
    monkeypatch.setattr("common.device.setup", lambda *a, **k: contextlib.nullcontext())
    for name in list(t.EXPERIMENTS):
        monkeypatch.setitem(t.EXPERIMENTS, name, lambda cfg, rt, argv_: seen.append(cfg))
    t.main(list(argv))
    return seen[0]


def _entries(text: str) -> dict:
    """{--flag: its help text, lines joined} of the flag listing."""
    out, flag = {}, None
    for line in text.splitlines():
        m = re.match(r"  (--[\w-]+)(.*)", line)
        if m:
            flag, out[m.group(1)] = m.group(1), m.group(2)
        elif flag and line.startswith("    "):
            out[flag] += " " + line.strip()
        else:
            flag = None
    return out


@pytest.mark.parametrize("mid", COURSE)
def test_train_help_is_two_screens_with_a_short_usage_and_grouped_flags(mid, capsys, monkeypatch):
    text = _help(mid, [], capsys, monkeypatch)
    assert len(text.splitlines()) <= HELP_LINES, f"{mid}: {len(text.splitlines())} lines"
    assert text.splitlines()[0] == f"usage: python -m milestones train {mid} [--preset P] [--experiment E] [flags]"
    for group in ("core:", "recipe:", "for --experiment "):  # and "model and data:" where a flag is neither
        assert f"\n{group}" in text, group
    assert "(default: None)" not in text
    # what `train <mid>` alone runs, and how to see another preset's values
    assert "Defaults shown are those of" in text and "--preset default" in text
    assert "`--preset quick --help` shows quick's" in text


@pytest.mark.parametrize("mid", COURSE)
@pytest.mark.parametrize("preset", [None, "quick", "smoke"])
def test_the_defaults_shown_are_the_values_the_run_takes(mid, preset, capsys, monkeypatch):
    for exp in _train(mid).EXPERIMENTS:
        if exp == "fast" and mid == "02_cnn_lenet":  # reached by --preset fast (its own test below)
            continue
        argv = ["--experiment", exp] + (["--preset", preset] if preset else [])
        shown = _entries(_help(mid, argv, capsys, monkeypatch))
        cfg = _config(mid, argv, monkeypatch)
        assert re.search(r"\(default: (\S+)\)$", shown["--precision"]).group(1) == cfg.precision
        for flag, help_ in shown.items():
            value = getattr(cfg, flag[2:].replace("-", "_"), None)
            said = help_.rfind("(default: ")
            if value is None or said < 0 or flag == "--help":
                continue
            want = repr(value) if value == "" else str(value)
            # a wrapped line may split a long value (or a word at a hyphen): compare without the spaces
            assert help_[said + 10:].rstrip(")").replace(" ", "") == want.replace(" ", ""), (mid, argv, flag)


def test_preset_fast_help_shows_the_races_values(capsys, monkeypatch):
    text = _help("02_cnn_lenet", ["--preset", "fast"], capsys, monkeypatch)
    shown = _entries(text)
    assert "Defaults shown are those of --experiment fast --preset fast." in " ".join(text.split())
    assert "(default: 256)" in shown["--batch-size"] and "(default: onecycle)" in shown["--schedule"]
    assert "(default: auto)" in shown["--precision"]


def test_a_help_that_names_its_default_loses_it_when_the_preset_sets_another(capsys, monkeypatch):
    plain = _entries(_help("05_lstm", ["--experiment", "ptb"], capsys, monkeypatch))["--forget-bias"]
    quick = _entries(_help("05_lstm", ["--experiment", "adding", "--preset", "quick"], capsys,
                           monkeypatch))["--forget-bias"]
    assert plain.endswith("(default: leave the init alone)")
    assert quick.endswith("(default: 3.0)") and "leave the init alone" not in quick


def _block(text: str, title: str) -> dict:
    """{name: its sentence} of the experiments or presets listed above the flags."""
    lines = text.split(f"\n{title}")[1].split("\n")[1:]
    out, name = {}, None
    for line in lines:
        m = re.match(r"  (\S+)\s+(.*)", line)
        if m and not line.startswith("    "):
            name, out[m.group(1)] = m.group(1), m.group(2)
        elif name and line.startswith("    "):
            out[name] += " " + line.strip()
        else:
            break
    return out


@pytest.mark.parametrize("mid", COURSE)
def test_every_experiment_and_preset_is_one_whole_sentence(mid, capsys, monkeypatch):
    text = _help(mid, [], capsys, monkeypatch)
    t = _train(mid)
    experiments = _block(text, "experiments (--experiment E):")
    assert set(experiments) == set(t.EXPERIMENTS) - ({"fast"} if mid == "02_cnn_lenet" else set())
    for name, line in experiments.items():
        assert line.endswith((".", "!", "?")), (name, line)
        doc = " ".join(t.EXPERIMENTS[name].__doc__.strip().split("\n\n")[0].split())
        # a line taken from the docstring is all of its first paragraph, not a cut (its first line)
        assert line.rstrip(".") == doc.rstrip(".") or not doc.startswith(line.rstrip(".")), (name, line)
    presets = _block(text, "presets (--preset P):")
    assert list(presets) == _preset_names(_presets(mid, []))  # each name once, the four common ones first
    for name, line in presets.items():
        assert len(line) > 20 and line.endswith("."), (name, line)


def test_experiment_lines_are_whole_where_the_docstring_runs_on():
    """The docstrings the issue found cut ("... against the Transformer, same", "... pre-LN without")."""
    doc = _train("01_dnn").EXPERIMENTS["mnist_1986_vs_modern"].__doc__
    assert _described(doc).endswith("(a run record per arm and rate).")
    assert _described("first line\n    and the second\n\n    another paragraph") == "first line and the second."


@pytest.mark.parametrize("alias, mid, flags", [
    ("lenet", "02_cnn_lenet", ()), ("alexnet", "03_alexnet", ()), ("resnet", "04_resnet", ()),
    ("lstm", "05_lstm", ()), ("transformer", "06_transformer", ()),
    ("gpt", "06_transformer", ("experiment", "charlm")),
    ("vae", "07_vae_gan_diffusion", ("model", "vae")), ("gan", "07_vae_gan_diffusion", ("model", "gan")),
    ("dcgan", "07_vae_gan_diffusion", ("model", "dcgan")), ("ddpm", "07_vae_gan_diffusion", ("model", "ddpm")),
    ("dnn", "01_dnn", ()), ("01", "01_dnn", ()),
])
def test_every_alias_trains_its_chapter_and_model(alias, mid, flags, monkeypatch):
    assert _resolve(alias) == mid
    t, seen = _train(mid), []
    monkeypatch.setattr("common.device.setup", lambda *a, **k: contextlib.nullcontext())
    for name in list(t.EXPERIMENTS):
        monkeypatch.setitem(t.EXPERIMENTS, name, lambda cfg, rt, argv_: seen.append(cfg))
    cli(["train", alias, "--preset", "smoke"])
    if flags:
        assert getattr(seen[0], flags[0]) == flags[1]
    assert set(ALIASES) >= {"lenet", "alexnet", "resnet", "lstm", "transformer", "vae", "gan", "ddpm"}


@pytest.mark.parametrize("argv, says", [
    (["train", "vea"], "(or lenet, alexnet, resnet, lstm, transformer, gpt, vae, gan, dcgan, ddpm)"),
    (["train", "vae", "--model", "gan"], "name the chapter"),
    (["course", "lenett"], "the course has: 01_dnn, 02_cnn_lenet"),
])
def test_an_unknown_or_contradicted_alias_is_one_line(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        cli(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and says in err, err


@pytest.mark.parametrize("argv", [["sample", "--help"], ["sample", "05_lstm", "--help"],
                                  ["sample", "06_transformer", "--help"], ["sample", "07_vae_gan_diffusion", "--help"]])
def test_sample_help_lists_the_shared_flags(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli(argv)
    out = capsys.readouterr().out
    assert e.value.code == 0
    for flag in SHARED:
        assert re.search(rf"^  {flag} ", out, re.M), (argv, flag)


@pytest.mark.parametrize("mid", ["05_lstm", "06_transformer", "07_vae_gan_diffusion"])
@pytest.mark.parametrize("n", ["--n", "--length"])  # --length: 05's earlier name, kept
def test_sample_takes_n_for_every_milestone(mid, n, tmp_path, capsys):
    """The flag is taken; what fails is the run that is not there, in one line."""
    with pytest.raises(SystemExit) as e:
        cli(["sample", mid, n, "5", "--run", str(tmp_path / "no_run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "no checkpoint" in err and n not in err, err


def test_sample_refuses_text_flags_for_images(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["sample", "vae", "--prompt", "a", "--run", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "text models" in err and err.count("\n") == 1


def test_07_groups_its_per_model_flags_under_the_model_shown(capsys, monkeypatch):
    text = _help("07_vae_gan_diffusion", ["--model", "ddpm"], capsys, monkeypatch)
    model_and_data, _, rest = text.partition("\nmodel and data:\n")[2].partition("\nfor --model ddpm:\n")
    assert "--train-size" in model_and_data and "--timesteps" not in model_and_data  # every model's flags
    assert "--timesteps" in rest and "--ch-mult" in rest and "--z-dim" not in text  # DDPM's only; the VAE's hidden
    assert "--z-dim" in _help("07_vae_gan_diffusion", ["--model", "vae"], capsys, monkeypatch)


def test_a_milestones_own_preset_given_to_an_experiment_without_it_is_refused(capsys):
    """01's `modern` is a preset of its MNIST experiments: with the symmetry experiment it would silently have run
    the defaults."""
    train = importlib.import_module("milestones.01_dnn.train")
    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "modern", "--steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert "--preset modern is for --experiment mnist" in err[0] and "not symmetry" in err[0]
