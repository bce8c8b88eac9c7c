"""Time the reference trainer's smoke preset against its 90 s budget and report its loss drop.

    python benchmarks/bench_smoke_preset.py [--device cpu] [--keep DIR]

Runs `python -m reference_trainer.main train --preset smoke --out TMP` as a subprocess (so the
wall time includes interpreter start, imports, data generation and checkpoint writes), then
reads TMP/metrics.jsonl. The machine is shared: the load average is printed with the result.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 90.0
REPO = Path(__file__).resolve().parents[1]


def run(out: Path, device: str) -> int:
    cmd = [
        sys.executable,
        "-m",
        "reference_trainer.main",
        "train",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--device",
        device,
    ]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(f"smoke run failed with exit status {proc.returncode}:\n{proc.stderr[-4000:]}", file=sys.stderr)
        return proc.returncode

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    window = max(1, len(rows) // 4)
    first = sum(r["loss"] for r in rows[:window]) / window
    last = sum(r["loss"] for r in rows[-window:]) / window
    epochs = len({r["epoch"] for r in rows})

    print(f"command:  {' '.join(cmd[1:])}")
    print(f"machine:  {os.cpu_count()} CPUs, load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after")
    print(f"run:      {len(rows)} optimizer steps over {epochs} epochs on {device}")
    print(
        f"wall:     {wall:.1f} s of the {BUDGET_S:.0f} s budget = {wall / BUDGET_S:.2f}x "
        f"({'within' if wall <= BUDGET_S else 'OVER'} budget); CPU user+sys {usage.ru_utime + usage.ru_stime:.1f} s"
    )
    falling = last < 0.9 * first  # the criterion of tests/trainer/test_cli.py
    print(
        f"loss:     mean of first {window} steps {first:.4f} -> last {window} steps {last:.4f} "
        f"({(last - first) / first:+.1%}; {'falling' if falling else 'NOT falling by 10%'})"
    )
    return 0 if wall <= BUDGET_S and falling else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="device of the run (the budget is for CPU)")
    parser.add_argument("--keep", type=Path, help="write the run here instead of a temporary folder")
    args = parser.parse_args()
    if args.keep is not None:
        return run(args.keep, args.device)
    with tempfile.TemporaryDirectory(prefix="bench_smoke_") as tmp:
        return run(Path(tmp), args.device)


if __name__ == "__main__":
    sys.exit(main())
