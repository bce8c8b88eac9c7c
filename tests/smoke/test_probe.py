"""The probe in trainers of other styles, through `--cmd`: per-step loss, lr, gradient norms before and
after clipping, and every checkpoint written through torch.save, with the user's code unchanged."""

from __future__ import annotations

import textwrap

from smoke_helpers import FIXTURES, PYTHON, explain, fixture_smoke, run_smoke


def test_probe_in_plain_amp_loop_records_steps_clipping_checkpoints_and_resume(tmp_path):
    result = fixture_smoke(tmp_path, "plain_amp_loop", "--resume-arg", "--resume {ckpt}")
    assert result.report is not None, explain(result)
    steps = result.report["series"]["train"]
    assert [s["step"] for s in steps] == list(range(1, 11))
    # scheduler.step() runs before optimizer.step() here, so step 1 already uses the decayed lr.
    assert steps[0]["lr"] == 2e-4 and steps[-1]["lr"] == 0.0
    assert all(
        s["max_norm"] == 1.0 and s["clip_pre"] == s["clip_post"] == s["grad_norm"] for s in steps
    )  # never above 1

    statuses = result.statuses()
    assert statuses["exit"] == statuses["finite"] == statuses["grad_clipping"] == statuses["ema_checkpoint"] == "pass"
    ema = result.row("ema_checkpoint")["data"]
    assert (
        ema["ema_key"] == "ema" and ema["model_key"] == "model" and ema["tensors"] == 32
    )  # AveragedModel "module." names
    assert result.row("sample")["data"]["shape"] == [8, 3, 32, 32]  # samples.pt from the EMA model

    # The checkpoint of epoch 1 was overwritten by epoch 2; the probe kept a copy to resume from. The
    # fixture restores model, EMA, optimizer, scheduler and scaler: the state check passes. It saves no
    # RNG state, so data order and noise change: the first resumed loss differs, reported as a warning.
    state = result.row("resume_state")
    assert state["status"] == "pass" and state["data"]["checkpoint_step"] == 5, state
    assert state["data"]["compared_step"] == 6 and {"weights", "outside_optimizer", "opt_step"} <= set(
        state["data"]["compared"]
    )
    exact = result.row("resume_exact")
    assert exact["status"] == "warn" and "RNG" in exact["detail"] and "--exact-resume" in exact["detail"]
    assert not {"resume_state", "resume_exact"} & set(result.report["failed"])
    assert "--resume" in result.report["runs"][1]["argv"]


def test_probe_in_dit_style_records_steps_and_the_nested_checkpoint(tmp_path):
    result = fixture_smoke(tmp_path, "dit_style")
    assert result.report is not None, explain(result)
    steps = result.report["series"]["train"]
    assert len(steps) == 10 and {s["lr"] for s in steps} == {1e-4}
    assert all(s["grad_norm"] > 0 and s["clip_pre"] is None for s in steps)
    statuses = result.statuses()
    assert statuses["lr_schedule"] == "n/a" and "constant lr" in result.row("lr_schedule")["value"]
    assert statuses["grad_clipping"] == "n/a"
    ema = result.row("ema_checkpoint")
    assert ema["status"] == "pass" and ema["data"]["checkpoint"].endswith("000-DiT-T-4/checkpoints/0000010.pt")
    assert "weights_only=False" in ema["detail"] and "argparse.Namespace" in ema["detail"]


def test_clipping_before_gradscaler_unscale_is_measured(tmp_path):
    """The runtime side of CLIP002: with an enabled GradScaler (CPU here), clip_grad_norm_ sees the
    scaled gradients; the probe finds the norm at optimizer.step() far below the post-clip norm. The
    trainer is started through the probe launcher, which must not record twice."""
    script = tmp_path / "trainer" / "train.py"
    script.parent.mkdir()
    script.write_text(
        textwrap.dedent("""
        import sys, torch
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        for step in range(6):
            x = torch.randn(16, 8)
            loss = ((model(x) - 1.0) ** 2).mean()
            opt.zero_grad()
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # before unscale_: the bug
            scaler.step(opt)
            scaler.update()
        torch.save({"model": model.state_dict()}, sys.argv[1] + "/ckpt.pt")
    """)
    )
    cmd = f"{PYTHON} -m optimizer_tool.smoke.probe train.py {{out}}"
    result = run_smoke(tmp_path, [str(script.parent), "--cmd", cmd])
    assert result.report is not None, explain(result)
    clip = result.row("grad_clipping")
    assert clip["status"] == "fail" and "changed between clip_grad_norm_ and optimizer.step()" in clip["value"]
    steps = result.report["series"]["train"]
    assert len(steps) == 6  # one probe, although sitecustomize and the launcher both loaded it
    # The loss is recorded unscaled although backward() ran on scaler.scale(loss).
    assert 0.1 < steps[0]["loss"] < 100


def test_compare_shows_baseline_and_patched_side_by_side(tmp_path):
    result = run_smoke(
        tmp_path,
        [
            str(FIXTURES / "smoke_ema_never_updated"),
            "--cmd",
            f"{PYTHON} train.py --epochs {{epochs}} --steps-per-epoch 5 --out {{out}}",
            "--compare",
            str(FIXTURES / "smoke_nan_loss"),
            "--epochs",
            "1",
        ],
    )
    assert result.returncode == 1, explain(result)
    report = result.report
    assert report["label"] == "patched" and report["baseline"]["label"] == "baseline"
    assert report["target"].endswith("smoke_ema_never_updated") and report["baseline"]["target"].endswith(
        "smoke_nan_loss"
    )
    assert "finite" in report["baseline"]["failed"] and "finite" not in report["failed"]
    assert len(report["series"]["train"]) == len(report["baseline"]["series"]["train"]) == 5
    assert "baseline" in result.stdout and "patched" in result.stdout
    assert (result.out / "baseline" / "run" / "checkpoint.pt").is_file() and (result.out / "patched" / "run").is_dir()
