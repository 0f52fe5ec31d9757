"""The GPU estimates: what is counted, how a time follows from it, and the paper's results they quote."""

import re

import pytest

from milestones import ROOT
from milestones.estimate import CASES, LAUNCH_SECONDS, MFU, Case, count, duration, estimate


def test_a_step_is_bound_by_compute_or_by_kernel_launches_whichever_is_longer():
    peak = 1000e12
    big = estimate(dict(flops_per_step=4e12, kernels_per_step=100, steps=3600, precision="bf16"), peak)
    assert big["bound"] == "compute" and big["step_seconds"] == pytest.approx(4e12 / (MFU * peak))
    small = estimate(dict(flops_per_step=1e9, kernels_per_step=500, steps=3600, precision="bf16"), peak)
    assert small["bound"] == "launches" and small["hours"] == pytest.approx(500 * LAUNCH_SECONDS)
    fp32 = estimate(dict(flops_per_step=4e12, kernels_per_step=1, steps=1, precision="fp32"), peak)
    assert fp32["step_seconds"] == pytest.approx(2 * big["step_seconds"])  # TF32: half the bf16 peak
    assert [duration(h) for h in (1 / 3600, 0.5, 5, 100)] == ["1 s", "30 min", "5.0 h", "4 days"]


def test_the_counted_step_is_a_real_step_of_the_train_script(data_root, one_thread):
    row = count(Case("01_dnn", "--experiment mnist --preset smoke", ""), data_root)
    assert row["steps"] == 20  # the smoke preset's total, read from its session
    assert row["batch"] == 64 and row["precision"] == "fp32"
    # 784-32-10 forward and backward on 64 examples: 2 x 3 x 64 x (784 x 32 + 32 x 10) FLOPs, less the input's
    # gradient that nothing needs
    assert 2 * 2 * 64 * (784 * 32 + 32 * 10) <= row["flops_per_step"] <= 2 * 3 * 64 * (784 * 32 + 32 * 10)
    assert 5 < row["kernels_per_step"] < 200


@pytest.mark.parametrize("case", CASES, ids=[f"{c.milestone} {c.flags}" for c in CASES])
def test_each_quoted_paper_number_is_in_its_chapters_notes(case):
    notes = (ROOT / case.milestone / "NOTES.md").read_text()
    result = case.expect.split("(")[0]  # the citation in brackets names a source, not a result
    for number in re.findall(r"\d[\d,]*\.?\d*%?", result):
        assert number in notes, f"{case.expect!r}: {number} is not in {case.milestone}'s NOTES.md"


def test_a_case_resolves_its_presets_config_without_running():
    """The batch and step total an estimate scales by come from the case's real preset (resolve_config)."""
    from milestones.estimate import Case, _fixed_steps, _preset_batch
    assert _preset_batch(Case("04_resnet", "", "")) == 128 and _fixed_steps(Case("04_resnet", "", ""))
    assert _preset_batch(Case("07_vae_gan_diffusion", "--model vae", "")) == 100
    assert not _fixed_steps(Case("07_vae_gan_diffusion", "--model vae", ""))  # epochs
