"""Each broken fixture trainer makes `smoke-test` exit 1 and name the check that caught it
(runtime ground truth in the fixtures' INTENT.md)."""

from __future__ import annotations

from smoke_helpers import explain, fixture_smoke


def test_diverging_lr_fails_the_lr_and_finite_checks(tmp_path):
    result = fixture_smoke(tmp_path, "smoke_diverging_lr")
    assert result.returncode == 1, explain(result)
    assert {"lr_schedule", "finite", "loss_falls"} <= set(result.report["failed"])
    lr = result.row("lr_schedule")
    assert "exceeds the configured 0.02 from step 4" in lr["value"] and "never stops rising" in lr["value"]
    assert lr["data"]["peak_lr"] > 1e6 * lr["data"]["base_lr"]
    assert "loss inf at step 7" in result.row("finite")["value"]
    assert "FAIL (finite, loss_falls, lr_schedule)" in result.stdout


def test_ema_never_updated_fails_the_ema_check(tmp_path):
    result = fixture_smoke(tmp_path, "smoke_ema_never_updated")
    assert result.returncode == 1, explain(result)
    assert "ema_checkpoint" in result.report["failed"]
    ema = result.row("ema_checkpoint")
    assert ema["value"].startswith("EMA never updated: all 8 trained tensors")
    assert ema["data"]["ema_tensors_at_init"] == ema["data"]["trained_tensors"] == 8
    assert ema["data"]["mean_abs_diff"] > 0  # the live weights moved, the EMA did not
    assert result.statuses()["finite"] == "pass" and result.statuses()["sample"] == "pass"
    assert "ema_checkpoint" in result.stdout.splitlines()[-3]  # the verdict line names it


def test_nan_loss_fails_the_finite_check(tmp_path):
    result = fixture_smoke(tmp_path, "smoke_nan_loss")
    assert result.returncode == 1, explain(result)
    assert "finite" in result.report["failed"]
    finite = result.row("finite")
    assert finite["data"]["first_nonfinite_loss_step"] == 3 and finite["data"]["first_nonfinite_grad_step"] == 3
    assert "loss inf at step 3" in finite["value"] and "non-finite in checkpoint checkpoint.pt" in finite["value"]
    assert result.statuses()["exit"] == "pass"  # nothing raised: exactly why "it did not crash" is not enough
