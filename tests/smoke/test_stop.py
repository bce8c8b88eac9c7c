"""On --timeout and on Ctrl-C the trainer's whole process group is stopped (a child it started in the
background included) and the partial report is still written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
from smoke_helpers import FIXTURES, PYTHON, REPO, explain, run_smoke, smoke_env

# A long plain_amp_loop run behind a shell that also leaves a sleeping child in the same group.
LONG_CMD = f"sh -c 'sleep 600 & exec {PYTHON} train.py --epochs 500 --steps-per-epoch 5 --out \"$0\"' {{out}}"


def group_members(pgid: int) -> list:
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.info["pid"]) == pgid:
                members.append(proc.info["pid"])
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def test_timeout_stops_the_process_group_and_writes_the_partial_json(tmp_path):
    result = run_smoke(tmp_path, [str(FIXTURES / "plain_amp_loop"), "--cmd", LONG_CMD, "--timeout", "15"], timeout=90)
    assert result.returncode == 1, explain(result)
    report = result.report
    assert report["complete"] is False and report["stopped"] == "timeout"
    run = report["runs"][0]
    assert run["timed_out"] and group_members(run["pgid"]) == []
    exit_row = result.row("exit")
    assert exit_row["status"] == "fail" and "timed out after" in exit_row["value"]
    assert report["series"]["train"], "the steps recorded before the stop are in the partial report"
    assert "stopped (timeout): partial report" in result.stdout


def test_ctrl_c_stops_the_process_group_and_writes_the_partial_json(tmp_path):
    out, report_path = tmp_path / "smoke", tmp_path / "report.json"
    cmd = [
        PYTHON,
        "-m",
        "optimizer_tool.cli",
        "smoke-test",
        str(FIXTURES / "plain_amp_loop"),
        "--cmd",
        LONG_CMD,
        "--out",
        str(out),
        "--json",
        str(report_path),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=smoke_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probe = out / "train" / "probe.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (probe.exists() and '"ev": "step"' in probe.read_text()):
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    report = json.loads(report_path.read_text())
    assert report["stopped"] == "interrupted" and report["exit_code"] == 130
    run = report["runs"][0]
    assert run["interrupted"] and group_members(run["pgid"]) == []
    assert report["series"]["train"]
    assert {r["key"] for r in report["checks"]} >= {"exit", "finite", "resume_state", "resume_exact"}
