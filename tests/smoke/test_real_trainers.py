"""`smoke-test` on trainers built the way real ones are: accelerate checkpoint folders with a safetensors
EMA, every gradient-norm clipping path, Lightning's gradient_clip_val, resuming from a folder
({ckpt_dir}), --max-steps, per-side --timeout under --compare, sample images."""

from __future__ import annotations

import importlib.util

import pytest
from real_trainers import ACCELERATE_TRAINER, LIGHTNING_TRAINER, LONG_TRAINER, SLEEPER, write_trainer
from smoke_helpers import PYTHON, explain, run_smoke

ACCELERATE_CMD = f"{PYTHON} train.py --epochs {{epochs}} --out {{out}}"


def accelerate_smoke(tmp_path, resume_arg: str, *extra: str):
    folder = write_trainer(tmp_path, ACCELERATE_TRAINER)
    return run_smoke(tmp_path, [str(folder), "--cmd", ACCELERATE_CMD, "--resume-arg", resume_arg, *extra])


def test_accelerate_trainer_with_checkpoint_folders_is_read_right(tmp_path):
    result = accelerate_smoke(tmp_path, "--resume {ckpt_dir}", "--max-grad-norm", "0.5")
    assert result.report is not None, explain(result)
    # One clipping path per step: accelerator.clip_grad_norm_, get_total_norm + clip_grads_with_norm_, a
    # clip_grad_norm_ bound by `from torch.nn.utils import`, torch.nn.utils.clip_grad.clip_grad_norm_.
    clip = result.row("grad_clipping")
    assert clip["status"] == "pass" and clip["data"]["calls"] == 8 and clip["data"]["max_norm"] == [0.5], clip
    # The EMA is a safetensors file in a sub-folder of the accelerate checkpoint folder.
    ema = result.row("ema_checkpoint")
    assert ema["status"] == "pass", ema
    assert ema["data"]["checkpoint"].endswith("run/checkpoint-8")
    assert ema["data"]["ema_key"] == "unet_ema/diffusion_pytorch_model.safetensors"
    assert ema["data"]["model_key"] == "model.safetensors" and ema["data"]["tensors"] == 4
    # The trainer deleted checkpoint-4 when it wrote checkpoint-8; the probe kept a copy of the folder.
    resume_argv = result.report["runs"][1]["argv"]
    assert resume_argv[-1].endswith("checkpoint-4") and "snapshots" in resume_argv[-1]
    state = result.row("resume_state")
    assert state["status"] == "pass" and state["data"]["compared_step"] == 5, state
    assert {"weights", "opt_step", "outside_optimizer", "optimizer.exp_avg[group 0]"} <= set(state["data"]["compared"])
    assert result.statuses()["resume_exact"] == "pass"  # accelerate restores the RNG and sampler state
    sample = result.row("sample")
    assert sample["status"] == "pass" and len(sample["data"]["media"]) == 2, sample
    assert result.returncode == 0, explain(result)


def test_ema_not_restored_fails_the_state_check_and_names_it(tmp_path):
    result = accelerate_smoke(tmp_path, "--resume {ckpt_dir} --no-ema-restore")
    assert result.returncode == 1, explain(result)
    state = result.row("resume_state")
    assert state["status"] == "fail" and state["data"]["differ"] == ["outside_optimizer"], state
    assert "outside_optimizer" in state["value"] and "EMA" in state["detail"]


def test_max_steps_stops_the_run_cleanly(tmp_path):
    folder = write_trainer(tmp_path, LONG_TRAINER)
    result = run_smoke(tmp_path, [str(folder), "--cmd", f"{PYTHON} train.py {{out}}", "--max-steps", "7"])
    assert result.report is not None, explain(result)
    exit_row = result.row("exit")
    assert exit_row["status"] == "pass" and "stopped after 7 optimizer steps by --max-steps" in exit_row["value"]
    assert exit_row["data"]["max_steps"] == 7
    assert [s["step"] for s in result.report["series"]["train"]] == list(range(1, 8))
    assert (result.out / "run" / "finally_ran").read_text() == "yes"


def test_compare_gives_each_side_its_own_timeout(tmp_path):
    folder = write_trainer(tmp_path, SLEEPER)
    # Each side sleeps 5 s: both fit in their own 10 s, not in one shared budget.
    result = run_smoke(
        tmp_path,
        [str(folder), "--cmd", f"{PYTHON} train.py 5", "--compare", str(folder), "--timeout", "10"],
        timeout=60,
    )
    assert result.report is not None, explain(result)
    assert result.report["stopped"] is None and result.report["baseline"]["stopped"] is None, explain(result)
    for report in (result.report, result.report["baseline"]):
        assert not report["runs"][0]["timed_out"]


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="lightning is not installed")
def test_lightning_gradient_clip_val_is_seen(tmp_path):
    folder = write_trainer(tmp_path, LIGHTNING_TRAINER)
    result = run_smoke(tmp_path, [str(folder), "--cmd", f"{PYTHON} train.py {{out}}", "--max-grad-norm", "0.25"])
    assert result.report is not None, explain(result)
    clip = result.row("grad_clipping")
    assert clip["status"] == "pass" and clip["data"]["calls"] == 6 and clip["data"]["max_norm"] == [0.25], clip


def test_resume_arg_needs_one_checkpoint_placeholder(tmp_path):
    folder = write_trainer(tmp_path, SLEEPER)
    result = run_smoke(tmp_path, [str(folder), "--cmd", f"{PYTHON} train.py {{out}}", "--resume-arg", "--resume"])
    assert result.returncode == 2 and "{ckpt_dir}" in result.stderr, explain(result)


SPLIT_CLIP_TRAINER = """
import sys, torch
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(6):
    x = torch.randn(16, 8)
    torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)).backward()
    params = list(model.parameters())
    clip_grads_with_norm_(params, 0.5, get_total_norm([p.grad for p in params]))
    opt.step()
    opt.zero_grad()
"""


def test_torch_get_total_norm_and_clip_grads_with_norm_are_seen(tmp_path):
    """torch >= 2.6's split clip (what accelerate does for DTensor parameters): not 'never called'."""
    folder = write_trainer(tmp_path, SPLIT_CLIP_TRAINER)
    result = run_smoke(tmp_path, [str(folder), "--cmd", f"{PYTHON} train.py", "--max-grad-norm", "0.5"])
    assert result.report is not None, explain(result)
    clip = result.row("grad_clipping")
    assert clip["status"] == "pass" and clip["data"]["calls"] == 6 and clip["data"]["max_pre"] > 0.5, clip
