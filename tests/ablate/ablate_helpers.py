"""Running ``t2s-opt ablate`` as a user does, from the tests of this folder."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "reference_trainer"


def run_ablate(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """``t2s-opt ablate ARGS`` in a subprocess, with the evaluator's cache kept out of the home folder."""
    env = {**os.environ, "T2S_EVAL_CACHE": str(cache)}
    command = [sys.executable, "-m", "optimizer_tool.cli", "ablate", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
