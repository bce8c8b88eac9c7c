"""What ``t2s-opt apply --only ema,monitoring`` does to the reference trainer, measured by running it:
the patched smoke run keeps an EMA that moves away from the live weights, saves it, restores it on
resume (the resumed run ends with the same EMA as the straight one), samples with it and logs the
gradient norm and the EMA drift to TensorBoard.

The patched copy lives in a temporary folder and every command runs there, so
``python -m reference_trainer.main`` imports the patched package (asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from casefiles import discover
from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.engine import run_check
from optimizer_tool.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "reference_trainer"


def python(workdir: Path, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def train(workdir: Path, out: Path, *extra: str) -> None:
    python(
        workdir,
        "-m",
        "reference_trainer.main",
        "train",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    )


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def scalars(run: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_patched_reference_trainer_keeps_saves_restores_and_samples_with_its_ema(tmp_path):
    patched = tmp_path / "reference_trainer"
    result = CliRunner().invoke(app, ["apply", "--only", "ema,monitoring", "--out", str(patched), str(REFERENCE)])
    assert result.exit_code == 0, result.output
    check, _ = run_check([patched], Settings())
    left = [f.concise(patched) for f in check.findings if f.key in ("ema", "monitoring")]
    assert left == [], "ema/monitoring findings left after the fix:\n" + "\n".join(left)
    where = python(tmp_path, "-c", "import reference_trainer; print(reference_trainer.__file__)").strip()
    assert Path(where).resolve().parent == patched.resolve(), f"the run would import {where}, not the patched copy"

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tmp_path, straight)
    final = checkpoint(straight / "checkpoints" / "epoch_2.pt")
    ema, live = final["ema_state_dict"]["shadow"], final["model_state_dict"]
    assert ema.keys() == {k for k, v in live.items() if v.is_floating_point() and k in ema}
    assert final["ema_state_dict"]["num_updates"] == final["global_step"], "one EMA update per optimizer step"
    assert any(not torch.equal(ema[k], live[k]) for k in ema), "the EMA equals the live weights"
    first = checkpoint(straight / "checkpoints" / "epoch_1.pt")["ema_state_dict"]["shadow"]
    assert any(not torch.equal(first[k], ema[k]) for k in ema), "the EMA did not move during epoch 2"

    # Resuming from epoch 1 must restore the EMA: the resumed run ends where the straight one did.
    train(tmp_path, resumed, "--data", str(straight / "data"), "--resume", str(straight / "checkpoints" / "epoch_1.pt"))
    again = checkpoint(resumed / "checkpoints" / "epoch_2.pt")["ema_state_dict"]
    assert again["num_updates"] == final["ema_state_dict"]["num_updates"]
    for name, tensor in ema.items():
        torch.testing.assert_close(again["shadow"][name], tensor, msg=f"resumed EMA differs at {name}")

    logged = scalars(straight)
    assert len(logged["train/grad_norm"]) == final["global_step"] and all(v > 0 for v in logged["train/grad_norm"])
    drift = logged["ema/param_difference"]
    assert drift[0] < drift[-1], "the EMA drift should grow as the live weights move away"

    # Sampling swaps the EMA in and the live weights back, so generate works from the checkpoint.
    printed = python(
        tmp_path,
        "-m",
        "reference_trainer.main",
        "generate",
        "--checkpoint",
        str(straight / "checkpoints" / "latest.pt"),
        "--prompt",
        "HELLO",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "samples"),
        "--device",
        "cpu",
    )
    assert (tmp_path / "samples" / "sample_00_hello.gif").is_file(), printed


def _fixed_projects() -> list[tuple[str, str, dict[str, str]]]:
    """(key, case, files) for every ema/monitoring case with an expected output: its input with
    the expected files laid over it (its Python files)."""
    return [
        (
            case.key,
            case.name,
            {rel: text for rel, text in {**case.inputs, **case.expected}.items() if rel.endswith(".py")},
        )
        for case in discover()
        if case.key in ("ema", "monitoring") and case.expected
    ]


@pytest.mark.parametrize("key,case,files", _fixed_projects(), ids=[f"{k}/{c}" for k, c, _ in _fixed_projects()])
def test_the_fix_forced_on_its_own_output_changes_nothing(key, case, files, tmp_path):
    """Idempotence of the transformation itself, not only of apply (whose rules no longer fire):
    the fix, handed every code it resolves, finds each change already made."""
    from optimizer_tool.contract import FixContext
    from optimizer_tool.engine import build_units
    from optimizer_tool.findings import Finding, Location, Severity
    from optimizer_tool.index import UnitIndex
    from optimizer_tool.project import load
    from optimizer_tool.registry import optimizations

    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    loaded = load([tmp_path])
    fixes = next(o.fixes for o in optimizations() if o.key == key)
    for unit in build_units(loaded, [tmp_path.resolve()]):
        if not any(f.path.name == ("train.py" if "train.py" in files else "trainer.py") for f in unit.files):
            continue
        modules = {f.path: f.module for f in unit.files}
        ctx = FixContext(UnitIndex.build(unit), dict(modules))
        where = Location(unit.entry.path, 1, 1)
        for fix in fixes:
            fix().apply(ctx, [Finding(code, key, Severity.MISSING, "forced", where) for code in fix.codes])
        changed = [p.name for p, module in ctx.modules.items() if module.code != modules[p].code]
        assert changed == [], f"the {key} fix changed {changed} of its own output"
