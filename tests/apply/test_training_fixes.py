"""What ``t2s-opt apply --only lr-schedule,clipping,lpips`` does to the reference trainer, measured by
running it: the patched smoke run trains offline (LPIPS with a random backbone, no download), its
learning rate rises through the warm-up and then decays to a floor of 1% of the base rate, it logs the
MSE and LPIPS terms, and the LPIPS term sends gradients into the model.

The patched copy lives in a temporary folder and every command runs there, so ``reference_trainer``
imports the patched package (asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer_tool.apply import plan, select
from optimizer_tool.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "reference_trainer"
KEYS = ["lr-schedule", "clipping", "lpips"]


def python(workdir: Path, *args: str, home: Path) -> str:
    """A fresh interpreter in ``workdir``; ``TORCH_HOME`` points at an empty folder, so any attempt to
    use downloaded backbone weights would fail instead of silently finding a cache."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TORCH_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def patched(tmp_path_factory) -> Path:
    """A copy of the reference trainer with the three fixes applied (the folder that holds the package)."""
    workdir = tmp_path_factory.mktemp("patched")
    package = workdir / "reference_trainer"
    package.mkdir()
    for source in REFERENCE.rglob("*.py"):
        target = package / source.relative_to(REFERENCE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    result = plan([package], select(KEYS, None, unsafe=False), Settings())
    assert result.ok, (result.refused, result.unfixed, result.blocking)
    assert {f.code for f in result.fixed} == {"LR003", "LPIPS001"}
    for path, text in result.changed.items():
        path.write_text(text, encoding="utf-8")
    (workdir / "torch_home").mkdir()
    return workdir


@pytest.mark.slow
def test_patched_smoke_run_warms_up_decays_to_the_floor_and_logs_both_loss_terms(patched):
    run = patched / "run"
    where = (
        "import sys, reference_trainer; from reference_trainer.main import main; "
        "print(reference_trainer.__file__, flush=True)"
    )
    out = python(
        patched,
        "-c",
        f"{where}; sys.exit(main(['train', '--preset', 'smoke', '--out', {str(run)!r}, '--device', 'cpu']))",
        home=patched / "torch_home",
    )
    assert Path(out.splitlines()[0]).resolve().parent == (patched / "reference_trainer").resolve(), (
        "the installed package shadows the patched copy"
    )

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [row["lr"] for row in rows]
    base = 3e-3  # smoke preset learning_rate
    peak = lrs.index(max(lrs))
    assert peak > 0 and all(a < b for a, b in zip(lrs[: peak + 1], lrs[1 : peak + 1])), f"no warm-up: {lrs[:5]}"
    assert peak < len(lrs) // 10 + 1, "the warm-up takes more than 10% of the run"
    assert max(lrs) == pytest.approx(base)
    after = lrs[peak:]
    assert all(a >= b for a, b in zip(after, after[1:])), "the learning rate does not decay after the warm-up"
    assert lrs[-1] < 0.05 * base and min(lrs) >= 0.01 * base, (
        f"decay should end near, not under, 1% of the base rate: {lrs[-3:]}"
    )

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in ("train/mse_loss", "train/lpips_loss")}
    assert all(len(values) == len(rows) and all(math.isfinite(v) for v in values) for values in scalars.values())
    assert all(v > 0 for v in scalars["train/lpips_loss"]), "the LPIPS term is zero"


GRADIENTS = """
import sys, torch, reference_trainer
from reference_trainer.config import smoke_config
from reference_trainer.trainer import Trainer

print(reference_trainer.__file__)
batch = {
    "video": torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1,
    "text": ["hello", "thank you"],
}

def gradients(lpips_weight):
    config = smoke_config()
    config.train.lpips_weight = lpips_weight
    config.train.gradient_accumulation_steps = 2  # one micro-batch: backward, no optimizer step
    trainer = Trainer(config, device="cpu")
    torch.manual_seed(0)
    trainer.train_step(batch)
    frozen = [p for p in trainer.lpips_fn.parameters()]
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen), "the LPIPS network is not frozen"
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])

without, with_lpips, doubled = gradients(0.0), gradients(0.1), gradients(0.2)
# The gradient is affine in the weight: g(w) = g_mse + w * g_lpips, with g_lpips != 0.
lpips_part = with_lpips - without
print(float(lpips_part.norm()), float((doubled - without - 2 * lpips_part).norm()), float(without.norm()))
"""


@pytest.mark.slow
def test_lpips_term_sends_gradients_into_the_model(patched):
    out = python(patched, "-c", GRADIENTS, home=patched / "torch_home").splitlines()
    assert Path(out[0]).resolve().parent == (patched / "reference_trainer").resolve()
    lpips_part, nonlinearity, mse_part = (float(v) for v in out[-1].split())
    assert lpips_part > 1e-3 * mse_part, "changing lpips_weight does not change the model's gradients"
    assert nonlinearity < 1e-3 * lpips_part, "the LPIPS gradient is not proportional to lpips_weight"
