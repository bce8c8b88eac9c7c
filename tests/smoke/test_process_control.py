"""Process control of `smoke-test` (issue 14, item 7): every descendant of a run is stopped, also one
that left the process group (setsid) or daemonized (fork, setsid, fork); the timeout holds to
--timeout + one grace period (+ start-up and the report); a run stopped before its first optimizer
step leaves the step checks n/a with the reason; --timeout must be a positive number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from smoke_helpers import PYTHON, REPO, explain, run_smoke, smoke_env

from optimizer_tool.smoke import session as smoke_session
from optimizer_tool.smoke.runner import GRACE_S, RunResult, RunSpec, run_all, write_sitecustomize

# Ignores SIGTERM, writes its pid to argv[1], sleeps: only SIGKILL ends it.
STUBBORN = (
    "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid())); os.replace(sys.argv[1] + '.tmp', sys.argv[1]); "
    "time.sleep(1000)"
)

# A trainer that ignores SIGTERM and leaves two such processes outside its process group.
ESCAPING_TRAINER = textwrap.dedent(f"""
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    STUBBORN = {STUBBORN!r}
    # A child in a session of its own: not in the run's process group.
    subprocess.Popen([sys.executable, "-c", STUBBORN, "setsid.pid"], start_new_session=True)
    # A daemon: fork, setsid, fork again; the middle process exits at once, its child is orphaned.
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", STUBBORN, "daemon.pid"])
        os._exit(0)
    time.sleep(1000)
""")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_left_over(pids) -> None:
    """Cleanup when a test fails: the processes the test's trainer started, by pid."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def test_timeout_kills_descendants_outside_the_group_within_timeout_plus_grace(tmp_path):
    trainer = tmp_path / "trainer"
    trainer.mkdir()
    (trainer / "train.py").write_text(ESCAPING_TRAINER)
    timeout = 4
    start = time.monotonic()
    result = run_smoke(
        tmp_path, [str(trainer), "--cmd", f"{PYTHON} train.py", "--timeout", str(timeout), "--max-grad-norm", "1.0"]
    )
    elapsed = time.monotonic() - start
    pids = [int((trainer / name).read_text()) for name in ("setsid.pid", "daemon.pid") if (trainer / name).exists()]
    try:
        assert len(pids) == 2, explain(result)
        assert [pid for pid in pids if not gone(pid)] == [], "a descendant outside the process group survived"
        assert elapsed < timeout + GRACE_S + 3, f"returned after {elapsed:.1f} s"
        assert result.returncode == 1, explain(result)
        run = result.report["runs"][0]
        assert run["timed_out"] and set(pids) <= set(run["pids"]) and run["survivors"] == []
        assert result.report["stopped"] == "timeout"
        # Stopped before its first optimizer step: nothing to judge, not a failure of the steps.
        statuses = result.statuses()
        assert statuses["exit"] == "fail" and result.report["failed"] == ["exit"], statuses
        for key in ("finite", "loss_falls", "lr_schedule", "grad_clipping", "ema_checkpoint", "resources"):
            row = result.row(key)
            assert row["status"] == "n/a" and "did not reach step 1" in row["value"] + row["detail"], row
        assert "stopped by --timeout" in result.row("finite")["value"]
    finally:
        kill_left_over(pids)


def test_runs_in_flight_share_one_grace_period(tmp_path):
    """Two runs side by side (as resume and sample run) that both ignore SIGTERM: one grace for both,
    not one after the other; each run's processes (a setsid child included) are killed."""
    site = write_sitecustomize(tmp_path / "site")
    specs = []
    for name in ("resume", "sample"):
        pid_file = tmp_path / f"{name}-child.pid"
        code = (
            f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {STUBBORN!r}, {str(pid_file)!r}], "
            f"start_new_session=True); exec({STUBBORN!r})"
        )
        specs.append(RunSpec(name, [PYTHON, "-c", code, str(tmp_path / f"{name}.pid")], tmp_path, tmp_path / name))
    start = time.monotonic()
    deadline = start + 2.0
    results = run_all(specs, site, deadline=deadline)
    elapsed = time.monotonic() - start
    pids = [int(p.read_text()) for p in sorted(tmp_path.glob("*.pid"))]
    try:
        assert elapsed < 2.0 + GRACE_S + 1.5, f"stopped after {elapsed:.1f} s: the grace was not shared"
        assert elapsed >= 2.0 + GRACE_S - 0.5, "the grace period is given to processes that ignore SIGTERM"
        assert len(pids) == 4 and [pid for pid in pids if not gone(pid)] == []
        for result in results:
            assert result.timed_out and result.returncode == -signal.SIGKILL and result.survivors == []
            assert len(result.pids) == 2 and "timed out after" in result.describe()
    finally:
        kill_left_over(pids)


def test_a_run_after_the_deadline_is_not_started(tmp_path):
    spec = RunSpec("sample", [PYTHON, "-c", "raise SystemExit(0)"], tmp_path, tmp_path / "sample")
    [result] = run_all([spec], write_sitecustomize(tmp_path / "site"), deadline=time.monotonic() - 1)
    assert result.timed_out and not result.ok and "--timeout reached" in result.describe()
    assert not (tmp_path / "sample" / "stdout.log").exists()


def test_interrupted_before_step_one_leaves_step_checks_not_applicable(tmp_path):
    """The partial report after Ctrl-C: the same n/a rows, with the reason."""
    run = RunResult("train", ["python"], str(tmp_path), interrupted=True, wall_s=1.5, probe=str(tmp_path / "none"))
    report = smoke_session.SmokeReport(target=str(tmp_path), mode="cmd", out_dir=str(tmp_path), runs=[run])
    report.stopped = "interrupted"
    options = smoke_session.SmokeOptions(path=tmp_path, cmd="python", max_grad_norm=1.0, max_memory=1 << 30)
    rows = {r.key: r for r in smoke_session.partial_rows(report, options)}
    assert rows["exit"].status == "fail"
    for key in ("finite", "loss_falls", "lr_schedule", "grad_clipping", "resources"):
        assert rows[key].status == "n/a", rows[key]
    assert rows["finite"].value == "did not reach step 1: the run was interrupted after 1.5 s"
    assert rows["resources"].detail.startswith("did not reach step 1")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_timeout_must_be_a_positive_number(tmp_path, value):
    cmd = [PYTHON, "-m", "optimizer_tool.cli", "smoke-test", str(tmp_path), "--cmd", "python x.py"]
    done = subprocess.run(
        cmd + ["--timeout", value, "--out", str(tmp_path / "out")],
        cwd=REPO,
        env=smoke_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--timeout" in done.stderr and "greater than 0" in done.stderr
    assert not (tmp_path / "out").exists()  # rejected before anything was made or started


def test_validate_rejects_bad_timeouts_in_the_api_too(tmp_path):
    for value in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(smoke_session.UsageError, match="--timeout"):
            smoke_session.validate(smoke_session.SmokeOptions(path=tmp_path, cmd="python x.py", timeout=value))
    smoke_session.validate(smoke_session.SmokeOptions(path=tmp_path, cmd="python x.py", timeout=0.5))


if sys.platform != "linux":  # pragma: no cover - the subreaper and /proc walk are Linux
    pytestmark = pytest.mark.skip("process-tree control is tested on Linux")
