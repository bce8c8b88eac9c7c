"""`t2s-opt check` on whole public repositories: wall time and peak memory per repository, side by
side with TorchFix on the same folders, in the same invocation.

    python benchmarks/bench_check_repos.py [--max-files N] [--only NAME] [--timeout S]

The repositories are the materialised validation set (validation/check/.work/<owner>__<repo>/,
written by validation/check/materialise.py from repository snapshots; 30 repositories today).
Each tool runs as a subprocess on the repository root, serially (one worker):

  ours      python -m optimizer_tool.cli check --jobs 1 --no-config --output-format concise ROOT
  TorchFix  torchfix --select ALL -j 1 ROOT          (its own venv, see bench_check_throughput.py)

with the repository as the working folder. Wall seconds and the child's peak resident memory
(``os.wait4``) are measured per repository and tool, interleaved (ours, TorchFix, next repository),
once each (a repository takes up to minutes). ``--max-files`` leaves out repositories with more
Python files than N (they are listed as left out); the summary gives files/s over the
repositories both tools finished, the ratio, the slowest repository of ours and how many took
over 20 s (the issue's per-repository target on one core). The machine is shared: the load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_check_throughput import TORCHFIX_VENV, torchfix_exe, versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "validation" / "check" / ".work"
SKIP = {".git", "__pycache__", ".venv", "venv", "node_modules", "build", "dist"}


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if not set(p.relative_to(root).parts[:-1]) & SKIP)


def measured(cmd: list[str], cwd: Path, timeout: float) -> tuple[float, float, int | None]:
    """(wall seconds, peak RSS in MB, exit status or None on timeout) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode
        if time.perf_counter() > deadline:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return time.perf_counter() - start, usage.ru_maxrss / 1024, None
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-files", type=int, default=0, help="leave out repositories with more .py files (0: none)")
    parser.add_argument("--only", action="append", help="repository folder names (repeatable)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per tool and repository")
    args = parser.parse_args()
    if not WORK.is_dir():
        sys.exit(f"{WORK} is missing: run validation/check/materialise.py first (see validation/check/README.md)")
    repos = sorted(p for p in WORK.iterdir() if p.is_dir() and (not args.only or p.name in args.only))
    exe = torchfix_exe()
    ours = [sys.executable, "-m", "optimizer_tool.cli", "check", "--jobs", "1", "--no-config"]
    ours += ["--output-format", "concise", "."]
    theirs = [str(exe), "--select", "ALL", "-j", "1", "."]
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{env_path}" if env_path else str(REPO)

    load_before = os.getloadavg()
    rows, left_out = [], []
    print(f"{'repository':<42} {'files':>6} {'lines':>8} {'ours s':>7} {'ours MB':>8} {'TF s':>7} {'TF MB':>6}")
    for root in repos:
        files = python_files(root)
        if args.max_files and len(files) > args.max_files:
            left_out.append(f"{root.name} ({len(files)} files)")
            continue
        lines = sum(len(p.read_bytes().splitlines()) for p in files)
        o_s, o_mb, o_rc = measured(ours, root, args.timeout)
        t_s, t_mb, t_rc = measured(theirs, root, args.timeout)
        rows.append((root.name, len(files), lines, o_s, o_mb, o_rc, t_s, t_mb, t_rc))
        flag = lambda rc: "" if rc is not None and rc in (0, 1) else (" timeout" if rc is None else f" rc={rc}")  # noqa: E731
        print(
            f"{root.name:<42} {len(files):6d} {lines:8d} {o_s:7.1f} {o_mb:8.0f} {t_s:7.1f} {t_mb:6.0f}"
            f"{flag(o_rc)}{flag(t_rc)}",
            flush=True,
        )
    load_after = os.getloadavg()

    done = [r for r in rows if r[5] in (0, 1) and r[8] in (0, 1)]
    n_files = sum(r[1] for r in done)
    ours_s, tf_s = sum(r[3] for r in done), sum(r[6] for r in done)
    print()
    print(f"tools:    {versions(TORCHFIX_VENV / 'bin' / 'python')}")
    print(
        f"machine:  {os.cpu_count()} CPUs, load average {'/'.join(f'{x:.2f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.2f}' for x in load_after)} after; serial runs, one each, interpreter start included"
    )
    print(
        f"repositories: {len(rows)} measured, {len(done)} finished by both"
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
    )
    if done:
        slowest = max(rows, key=lambda r: r[3])
        peak_ours, peak_tf = max(r[4] for r in rows), max(r[7] for r in rows)
        print(f"ours:     {n_files} files in {ours_s:.1f} s = {n_files / ours_s:.2f} files/s; peak {peak_ours:.0f} MB")
        print(f"TorchFix: {n_files} files in {tf_s:.1f} s = {n_files / tf_s:.2f} files/s; peak {peak_tf:.0f} MB")
        print(f"ratio:    {tf_s / ours_s:.2f}x (files/s ours / TorchFix, serial; > 1 means t2s-opt is faster)")
        over = [r[0] for r in rows if r[3] > 20]
        print(
            f"slowest:  {slowest[0]} {slowest[3]:.1f} s; over 20 s: {len(over)}"
            + (f" ({', '.join(over)})" if over else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
