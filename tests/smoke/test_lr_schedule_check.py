"""The lr_schedule check on measured per-step learning rates (what the probe records), without a
training run: a warm-up that ends in a constant rate is a schedule choice when the warm-up length
is not known (pytorch-ddpm's ``warmup_lr``), not a failure; one that overshoots its base still fails."""

from __future__ import annotations

from pathlib import Path

from optimizer_tool.smoke.checks import Expectations, check_lr_schedule
from optimizer_tool.smoke.records import ProbeRecord


def _record(lrs: list[float], base: float = 1e-3) -> ProbeRecord:
    steps = [{"n": i + 1, "lr": [lr], "base_lr": [base], "scheduled": True} for i, lr in enumerate(lrs)]
    return ProbeRecord(Path("probe.jsonl"), pid=1, started=True, torch_loaded=True, steps=steps)


def test_warm_up_then_constant_without_a_known_warm_up_passes_and_says_so():
    row = check_lr_schedule(_record([2e-4, 4e-4, 6e-4, 8e-4, 1e-3, 1e-3, 1e-3, 1e-3]), Expectations())
    assert row.status == "pass", row
    assert "no decay within the run" in row.value


def test_an_lr_above_the_base_still_fails():
    row = check_lr_schedule(_record([5e-4, 1e-3, 2e-3, 2e-3]), Expectations())
    assert row.status == "fail", row
