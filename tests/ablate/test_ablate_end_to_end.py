"""``t2s-opt ablate`` end to end on the reference trainer: real applies, real training, real evaluation.

Two keys: ema applies; clipping is already in the reference trainer (nothing to fix), so its arm is
reported as not applied and never trained, and no combined arm is left to make. One seed, a 4-step
budget on 16 clips at 16x16x4, one clip per gloss sampled with 2 DDIM steps, a tiny recogniser.
"""

import json
from pathlib import Path

import pytest
import torch
from ablate_helpers import REFERENCE, run_ablate

pytestmark = pytest.mark.slow

TINY_RUN = (
    "--keys", "ema,clipping", "--seeds", "1", "--budget-steps", "4", "--device", "cpu",
    "--set", "data.synthetic_samples=16", "--set", "train.num_inference_steps=2",
    "--num-per-gloss", "1", "--resamples", "20",
)  # fmt: skip


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, tiny_recogniser):
    root = tmp_path_factory.mktemp("ablation")
    args = (str(REFERENCE), *TINY_RUN, "--recogniser", str(tiny_recogniser), "--out", str(root / "out"))
    done = run_ablate(*args, cache=root / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "out", args, root / "cache", done


def _mtimes(out: Path) -> dict[str, int]:
    names = ("result.json", "job.log", "apply.json", "prepared.json", "evaluation.json")
    return {str(p): p.stat().st_mtime_ns for name in names for p in out.rglob(name)}


def test_reports_each_arm_against_the_baseline(ablation):
    out, _, _, done = ablation
    report = json.loads((out / "report.json").read_text())
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert list(arms) == ["baseline", "ema", "clipping"]
    assert report["prepared"]["steps"] == 4 and report["prepared"]["clip_shape"] == [4, 16, 16]
    assert arms["ema"]["applied"] and arms["ema"]["seeds"] == [0]
    effect = arms["ema"]["effects"]["frechet_distance"]
    assert effect["seeds"] == [0] and effect["verdict"] == "1 seed: no CI"
    assert arms["ema"]["claim"]["low_percent"] == 10
    assert set(report["baseline"]) >= {"back_translation", "frechet_distance", "trajectory_error_norm"}
    assert "ema" in done.stdout and "+10-15%" in done.stdout
    assert (out / "ablation.png").stat().st_size > 0


def test_an_already_present_key_is_not_trained(ablation):
    out, _, _, done = ablation
    clipping = next(arm for arm in json.loads((out / "report.json").read_text())["arms"] if arm["arm"] == "clipping")
    assert not clipping["applied"] and clipping["reason"].startswith("nothing to fix")
    assert clipping["seeds"] == [] and not list((out / "arms" / "clipping").glob("seed_*"))
    assert "clipping not applied" in done.stderr


def test_each_arm_trains_its_own_patched_copy(ablation):
    """The ema arm's checkpoint holds the EMA the patch adds; the baseline's does not; the same data,
    budget and seed went into both."""
    out, _, _, _ = ablation
    for arm in ("baseline", "ema"):
        result = json.loads((out / "arms" / arm / "seed_0" / "result.json").read_text())
        assert result["steps"] == 4
        assert result["commands"]["cwd"] == str(out / "arms" / arm / "trainer")
        assert "--set train.seed=0" in result["commands"]["train"]
        assert f"--data {out}/data/manifest.jsonl" in result["commands"]["train"]

    def keys(arm: str) -> set:
        path = out / "arms" / arm / "seed_0" / "run" / "checkpoints" / "latest.pt"
        return set(torch.load(path, map_location="cpu", weights_only=True))

    assert "ema_state_dict" in keys("ema") and "ema_state_dict" not in keys("baseline")


def test_a_rerun_runs_nothing_that_finished(ablation):
    out, args, cache, _ = ablation
    before = _mtimes(out)
    again = run_ablate(*args, cache=cache)
    assert again.returncode == 0, again.stderr
    assert _mtimes(out) == before  # no apply, no preparation, no training, no evaluation
    assert "baseline: seed 0: done earlier" in again.stderr

    (out / "arms" / "ema" / "seed_0" / "result.json").unlink()  # as if killed during its evaluation
    third = run_ablate(*args, cache=cache)
    assert third.returncode == 0, third.stderr
    after, baseline = _mtimes(out), str(out / "arms" / "baseline" / "seed_0" / "result.json")
    assert after[baseline] == before[baseline]  # finished: left alone
    assert str(out / "arms" / "ema" / "seed_0" / "result.json") in after  # unfinished: run again


def test_other_settings_do_not_mix_into_an_ablation(ablation):
    out, args, cache, _ = ablation
    changed = [("8" if a == "4" else a) for a in args]  # --budget-steps 8
    done = run_ablate(*changed, cache=cache)
    assert done.returncode == 2
    assert "budget_steps: 4 there, 8 now" in done.stderr and "choose another --out" in done.stderr
