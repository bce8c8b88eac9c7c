"""Helpers for the smoke-test tests: the command runs as a real subprocess (its own signal handling,
process groups and exit status are under test), one CPU thread per trainer on the shared machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "trainers"
PYTHON = sys.executable
# {epochs} and {out} are filled in by smoke-test; 5 steps per epoch keep a fixture run ~10 s.
FIXTURE_CMD = f"{PYTHON} train.py --epochs {{epochs}} --steps-per-epoch 5 --out {{out}}"


def smoke_env() -> Dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    return env


@dataclass
class SmokeResult:
    returncode: int
    stdout: str
    stderr: str
    report: Optional[Dict[str, Any]]
    out: Path

    def row(self, key: str, report: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        rows = {r["key"]: r for r in (report or self.report)["checks"]}
        return rows[key]

    def statuses(self, report: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
        return {r["key"]: r["status"] for r in (report or self.report)["checks"]}


def run_smoke(tmp_path: Path, args: List[str], timeout: float = 240) -> SmokeResult:
    out, report = tmp_path / "smoke", tmp_path / "report.json"
    cmd = [PYTHON, "-m", "optimizer_tool.cli", "smoke-test", *args, "--out", str(out), "--json", str(report)]
    done = subprocess.run(cmd, cwd=REPO, env=smoke_env(), capture_output=True, text=True, timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else None
    return SmokeResult(done.returncode, done.stdout, done.stderr, data, out)


def fixture_smoke(tmp_path: Path, name: str, *extra: str) -> SmokeResult:
    return run_smoke(tmp_path, [str(FIXTURES / name), "--cmd", FIXTURE_CMD, *extra])


def explain(result: SmokeResult) -> str:
    """Assertion message: the table and the tail of stderr of a smoke run."""
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
