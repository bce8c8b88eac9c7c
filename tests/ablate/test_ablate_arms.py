"""Arms and their copies: a key whose apply refuses, or finds nothing to fix, is reported and never trained."""

import json

from ablate_helpers import REFERENCE

from optimizer_tool.ablate.arms import Arm, combined_arm, judge_apply, single_arms
from optimizer_tool.ablate.runner import Runner, Settings


class Recorder:
    def __init__(self) -> None:
        self.total, self.lines = 0, []

    def add_total(self, count: int) -> None:
        self.total += count

    def begin(self, label: str) -> None:
        pass

    def end(self, label: str, outcome: str) -> None:
        self.lines.append(f"{label}: {outcome}")


def test_arms_are_baseline_each_key_and_the_applied_keys_together():
    assert single_arms(["ema", "cosine"]) == [Arm("baseline", ()), Arm("ema", ("ema",)), Arm("cosine", ("cosine",))]
    together = combined_arm(["ema", "cosine"])
    assert together == Arm("all", ("ema", "cosine")) and together.folder == "all-ema+cosine"
    assert combined_arm(["ema"]) is None  # would repeat the ema arm


def test_refused_and_already_present_keys_are_not_applied(tmp_path):
    """resolution's fix would change t2s/models, outside the trainer folder: apply refuses (exit 2).
    The reference trainer already clips its gradients: apply finds nothing to fix. Neither arm is
    trained, and no combined arm is made from the keys that did not apply."""
    settings = Settings(package=REFERENCE, keys=("resolution", "clipping"), seeds=1, budget_steps=4, out=tmp_path)
    recorder = Recorder()
    copies = Runner(settings, recorder).copies()
    assert [c.arm.name for c in copies] == ["baseline", "resolution", "clipping"]
    baseline, resolution, clipping = copies
    assert baseline.applied and (baseline.root / "reference_trainer" / "trainer.py").is_file()
    assert not resolution.applied and "outside" in resolution.reason and "t2s/models" in resolution.reason
    assert not clipping.applied and clipping.reason.startswith("nothing to fix")
    assert "resolution: t2s-opt apply --only resolution: not applied: " in "\n".join(recorder.lines)
    record = json.loads((tmp_path / "arms" / "resolution" / "apply.json").read_text())
    assert record["applied"] is False and record["command"].startswith("t2s-opt apply --only resolution --out ")
    assert not list(tmp_path.glob("arms/*/seed_*"))  # nothing trained

    again = Runner(settings, Recorder()).copies()  # recorded outcomes are read back, not applied again
    assert [(c.applied, c.reason) for c in again] == [(c.applied, c.reason) for c in copies]


def test_apply_exit_statuses():
    assert judge_apply(0, "ema:\n  fixed EMA001 ...\nwrote 2 file(s):\n", "") == (True, "")
    assert judge_apply(1, "wrote 1 file(s):\nstill reported for the applied optimizations\n", "") == (True, "")
    held = "not applied: the lpips fix cannot place its change: trainer.py:9: no loss\n"
    assert judge_apply(1, "wrote 1 file(s):\n", held) == (False, held.strip())
    refused = judge_apply(2, "", "t2s-opt: error: --only: unknown optimization(s) x\n")
    assert refused == (False, "--only: unknown optimization(s) x")
    assert judge_apply(-9, "", "")[1] == "apply failed with status -9: no message"
