"""`t2s-opt smoke-test` on the reference trainer: its smoke preset, in a subprocess, judged by measured
signals. Unpatched, EMA is "n/a"; after `t2s-opt apply --all` every check applies and passes."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from smoke_helpers import PYTHON, REPO, explain, run_smoke, smoke_env

REFERENCE = REPO / "reference_trainer"
PASSING = {"exit", "finite", "loss_falls", "lr_schedule", "grad_clipping", "resume_state", "resume_exact", "sample"}


def test_unpatched_reference_trainer_passes_with_ema_not_applicable(tmp_path):
    result = run_smoke(tmp_path, [str(REFERENCE)])
    assert result.returncode == 0, explain(result)
    report = result.report
    assert report["passed"] and report["complete"] and report["mode"] == "reference"
    statuses = result.statuses()
    assert {k for k, v in statuses.items() if v == "pass"} == PASSING, statuses
    assert statuses["ema_checkpoint"] == "n/a" and "no EMA state" in result.row("ema_checkpoint")["value"]
    assert statuses["resources"] == "n/a"  # measured, but no --max-memory to judge against

    # It says what it overrides before it starts (size, data, epochs, logging, output dir).
    overrides = {o["key"]: o for o in report["overrides"]}
    for key in (
        "model.preset",
        "data.image_size",
        "data.synthetic_samples",
        "train.num_epochs",
        "train.log_every",
        "train.output_dir",
    ):
        assert key in overrides and key in result.stderr, key
    assert overrides["train.output_dir"]["after"] == str(result.out / "run")

    # Measured values behind the verdicts.
    loss = result.row("loss_falls")["data"]
    assert loss["window"] == 8 and loss["median_last"] < 0.9 * loss["median_first"]
    lr = result.row("lr_schedule")["data"]
    assert lr["peak_step"] == 3 and lr["peak_lr"] == pytest.approx(3e-3) and lr["last_lr"] < lr["peak_lr"]
    resume = result.row("resume_exact")["data"]
    assert resume["compared_step"] == 17 and resume["rel_diff"] <= 1e-3 and resume["steps_compared"] == 16
    state = result.row("resume_state")
    assert state["status"] == "pass" and state["data"]["compared_step"] == 17 and not state["data"]["differ"]
    sample = result.row("sample")["data"]
    assert sample["shape"] == [1, 3, 4, 16, 16] and sample["n_nonfinite"] == 0
    assert [r["step"] for r in report["series"]["train"]] == list(range(1, 33))
    assert (result.out / "smoke.png").read_bytes()[:4] == b"\x89PNG"
    assert {r["name"] for r in report["runs"]} == {"train", "resume", "sample"}


def _ema_fix_available() -> bool:
    ema_rules = REPO / "optimizer_tool" / "rules" / "ema"
    return (REPO / "optimizer_tool" / "apply.py").is_file() and any(
        re.search(r"class .*Fix", path.read_text(encoding="utf-8")) for path in ema_rules.rglob("*.py")
    )


@pytest.mark.slow
@pytest.mark.skipif(not _ema_fix_available(), reason="t2s-opt apply has no EMA fix yet")
def test_reference_trainer_patched_by_apply_all_passes_every_check(tmp_path):
    patched = tmp_path / "patched" / "reference_trainer"
    done = subprocess.run(
        [PYTHON, "-m", "optimizer_tool.cli", "apply", "--all", "--out", str(patched), str(REFERENCE)],
        cwd=REPO,
        env=smoke_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(patched / "__pycache__", ignore_errors=True)

    result = run_smoke(tmp_path, [str(patched.parent)])
    assert result.returncode == 0, explain(result)
    assert result.report["target"] == str(patched)
    statuses = result.statuses()
    assert {k for k, v in statuses.items() if v == "pass"} == PASSING | {"ema_checkpoint"}, statuses
    ema = result.row("ema_checkpoint")["data"]
    assert (
        ema["ema_key"] == "ema_state_dict"
        and ema["mean_abs_diff"] > 0
        and ema["ema_tensors_at_init"] < ema["trained_tensors"]
    )
    sample = result.row("sample")["data"]
    assert sample["ema_sampling"]["same_with_live_weights_zeroed"] is True
