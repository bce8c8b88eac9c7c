"""Time `t2s-opt smoke-test reference_trainer/` against the 90 s budget of the smoke preset.

    python benchmarks/bench_smoke_test.py [--target DIR] [--device cpu] [--overhead]

Runs the whole command as a subprocess (interpreter start, reading the preset, training 2 epochs,
then the resume run and generate side by side, the checks, the plot), and prints the wall time
of each phase from its --json report. --overhead also times the bare
`python -m reference_trainer.main train --preset smoke` run, the probe's share of the training
run's time. The machine is shared: the load average is printed with the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 90.0
REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--target",
        type=Path,
        default=REPO / "reference_trainer",
        help="trainer to smoke-test (a reference_trainer layout; e.g. a patched copy)",
    )
    parser.add_argument("--device", default="cpu", help="device of the runs (the budget is for CPU)")
    parser.add_argument("--overhead", action="store_true", help="also time the bare training run without the probe")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_smoke_test_") as tmp:
        tmp = Path(tmp)
        report_path = tmp / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "optimizer_tool.cli",
            "smoke-test",
            str(args.target),
            "--device",
            args.device,
            "--out",
            str(tmp / "smoke"),
            "--json",
            str(report_path),
        ]
        load_before = os.getloadavg()[0]
        wall, proc = timed(cmd, REPO)
        load_after = os.getloadavg()[0]
        if not report_path.exists():
            print(f"smoke-test wrote no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}", file=sys.stderr)
            return 2
        report = json.loads(report_path.read_text())
        bare = None
        if args.overhead:
            bare, bare_proc = timed(
                [
                    sys.executable,
                    "-m",
                    "reference_trainer.main",
                    "train",
                    "--preset",
                    "smoke",
                    "--out",
                    str(tmp / "bare"),
                    "--device",
                    args.device,
                ],
                args.target.resolve().parent if args.target.name == "reference_trainer" else args.target,
            )
            if bare_proc.returncode != 0:
                print(f"bare run failed:\n{bare_proc.stderr[-4000:]}", file=sys.stderr)
                return 2

    print(f"command:  t2s-opt smoke-test {args.target} --device {args.device}")
    print(f"machine:  {os.cpu_count()} CPUs, load average {load_before:.2f} before / {load_after:.2f} after")
    runs = {r["name"]: r for r in report["runs"]}
    phases = ", ".join(f"{name} {r['wall_s']:.1f} s" for name, r in runs.items())
    print(f"runs:     {phases} (resume and sample run side by side)")
    print(
        f"wall:     {wall:.1f} s of the {BUDGET_S:.0f} s budget = {wall / BUDGET_S:.2f}x "
        f"({'within' if wall <= BUDGET_S else 'OVER'} budget)"
    )
    if bare is not None:
        train = runs["train"]["wall_s"]
        print(
            f"probe:    training run {train:.1f} s under the probe vs {bare:.1f} s bare ({train / bare - 1:+.0%}; "
            "startup included, noisy on a shared machine)"
        )
    verdicts = ", ".join(f"{r['key']} {r['status']}" for r in report["checks"])
    print(f"checks:   {verdicts}")
    print(f"verdict:  exit {report['exit_code']} ({'PASS' if report['passed'] else 'FAIL'})")
    return 0 if wall <= BUDGET_S and report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
