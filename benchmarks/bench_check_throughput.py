"""Throughput of `t2s-opt check` (serial and with worker processes) against TorchFix, in files/s
and lines/s, on a fixed corpus of >= 300 real Python files.

    python benchmarks/bench_check_throughput.py [--runs 3] [--jobs 2] [--list]

Run it with the project's interpreter (.venv/bin/python): the corpus is taken from the diffusers
and transformers packages installed there. Corpus, in this order (sorted, so it is the same on
every machine with the same package versions):

  diffusers: training_utils.py, optimization.py, schedulers/*.py, models/unets/*.py
  transformers: the first 190 files of models/*/*.py sorted by path
  this repository: fixtures/trainers/**/*.py and reference_trainer/**/*.py

TorchFix pins libcst < 1.6, so it gets its own virtual environment, benchmarks/.venv-torchfix
(created here when missing: `python -m venv` + `pip install torchfix`; gitignored). Both tools run
as subprocesses on the same file list, so each time includes interpreter start and imports:

  ours      python -m optimizer_tool.cli check --jobs N --no-config --output-format concise FILES
  TorchFix  torchfix --select ALL -j N FILES

What each does per file:
  TorchFix  skips a file that has no "torch" in it; for the others: libcst parse, metadata
            (QualifiedNameProvider = scope analysis, WhitespaceInclusivePositionProvider) and a
            batched visit by all its visitors, then the diff of its fixes.
  ours      libcst parse of every file; training files also pull in the local modules they
            import (here the t2s package for reference_trainer, outside the corpus: extra work
            not counted in files/s); every file is indexed (PositionProvider + one visit
            collecting calls/assigns/settings with import-alias qualified names) and every rule
            runs on every unit (a trainer with its imports, or a library file alone; most rules
            answer "n/a" on library code). With --jobs N the files are parsed in N worker
            processes, then parsed again there per unit (trees are not sent between processes).
Since TorchFix parses fewer files than it is given, a like-for-like line runs ours on only the
files TorchFix parses (those containing "torch"), and compares with TorchFix on the full list.

Each configuration is warmed once on the first 20 files (imports, .pyc) after all corpus files
are read once (page cache), then timed --runs times, interleaved (ours, TorchFix, ours, ...);
the median is reported. The machine is shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCHFIX_VENV = REPO / "benchmarks" / ".venv-torchfix"
TRANSFORMERS_FILES = 190


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed in {sys.executable}; run this with the project's .venv/bin/python")
    return Path(list(spec.submodule_search_locations)[0])


def corpus() -> list[Path]:
    def py(folder: Path, pattern: str) -> list[Path]:
        return sorted(p for p in folder.glob(pattern) if "__pycache__" not in p.parts)

    diffusers, transformers = package_dir("diffusers"), package_dir("transformers")
    files = [diffusers / "training_utils.py", diffusers / "optimization.py"]
    files += py(diffusers / "schedulers", "*.py") + py(diffusers / "models" / "unets", "*.py")
    files += py(transformers / "models", "*/*.py")[:TRANSFORMERS_FILES]
    files += py(REPO / "fixtures" / "trainers", "**/*.py") + py(REPO / "reference_trainer", "**/*.py")
    return files


def count_lines(files: list[Path]) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in files)


def torchfix_exe() -> Path:
    exe = TORCHFIX_VENV / "bin" / "torchfix"
    if not exe.exists():
        print(f"creating {TORCHFIX_VENV.relative_to(REPO)} with torchfix ...", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(TORCHFIX_VENV)], check=True)
        subprocess.run([str(TORCHFIX_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "torchfix"], check=True)
    return exe


def versions(tf_python: Path) -> str:
    ours = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('libcst'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    theirs = subprocess.run(
        [str(tf_python), "-c", "import importlib.metadata as m; print(m.version('torchfix'), m.version('libcst'))"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return (
        f"t2s-opt on libcst {ours}; TorchFix {theirs[0]} on libcst {theirs[1]}"
        if len(theirs) == 2
        else f"libcst {ours}"
    )


def ours_cmd(jobs: int, files: list[Path]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "optimizer_tool.cli",
        "check",
        "--jobs",
        str(jobs),
        "--no-config",
        "--output-format",
        "concise",
        *map(str, files),
    ]


def torchfix_cmd(exe: Path, jobs: int, files: list[Path]) -> list[str]:
    return [str(exe), "--select", "ALL", "-j", str(jobs), *map(str, files)]


def timed(cmd: list[str], ok: set[int]) -> tuple[float, int]:
    """Wall seconds and the number of lines printed (findings / violations)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in ok:
        sys.exit(f"{' '.join(cmd[:6])} ... failed with exit status {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, len([line for line in proc.stdout.splitlines() if line.strip()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the parallel runs, for both tools")
    parser.add_argument("--list", action="store_true", help="print the corpus and exit")
    args = parser.parse_args()

    files = corpus()
    if args.list:
        print("\n".join(map(str, files)))
        return 0
    torch_files = [p for p in files if b"torch" in p.read_bytes()]
    lines, torch_lines = count_lines(files), count_lines(torch_files)
    exe = torchfix_exe()
    ok_ours, ok_tf = {0, 1}, {0, 1}
    j = args.jobs
    configs = [  # (label, command for a file list, the files it is run on and credited with, their lines)
        ("t2s-opt check  jobs=1", lambda fs: ours_cmd(1, fs), files, lines),
        ("TorchFix       -j 1", lambda fs: torchfix_cmd(exe, 1, fs), files, lines),
        (f"t2s-opt check  jobs={j}", lambda fs: ours_cmd(j, fs), files, lines),
        (f"TorchFix       -j {j}", lambda fs: torchfix_cmd(exe, j, fs), files, lines),
        ("t2s-opt check  jobs=1, torch files only", lambda fs: ours_cmd(1, fs), torch_files, torch_lines),
        (f"t2s-opt check  jobs={j}, torch files only", lambda fs: ours_cmd(j, fs), torch_files, torch_lines),
    ]

    load_before = os.getloadavg()
    count_lines(files)  # page cache
    for label, make, *_ in configs:
        timed(make(files[:20]), ok_ours if "t2s-opt" in label else ok_tf)
    times: dict[str, list[float]] = {label: [] for label, *_ in configs}
    printed: dict[str, int] = {}
    for run in range(args.runs):
        for label, make, run_files, _ in configs:
            wall, out = timed(make(run_files), ok_ours if "t2s-opt" in label else ok_tf)
            times[label].append(wall)
            printed[label] = out
            print(f"  run {run + 1}/{args.runs}  {label:<40} {wall:7.1f} s", flush=True)
    load_after = os.getloadavg()

    print()
    print(
        f"corpus:   {len(files)} files, {lines:,} lines "
        f"({len(torch_files)} files / {torch_lines:,} lines contain 'torch', "
        f"the ones TorchFix parses)"
    )
    print(f"tools:    {versions(TORCHFIX_VENV / 'bin' / 'python')}")
    print(
        f"machine:  {os.cpu_count()} CPUs, "
        f"load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.2f}' for x in load_after)} after"
    )
    print(f"timing:   median of {args.runs} runs, each tool as a subprocess (interpreter start and imports included)\n")
    print(f"{'configuration':<42} {'median s':>9} {'files/s':>8} {'lines/s':>9} {'output lines':>13}  runs (s)")
    median = {label: statistics.median(values) for label, values in times.items()}
    for label, _, run_files, n_lines in configs:
        m, n_files = median[label], len(run_files)
        runs = ", ".join(f"{v:.1f}" for v in times[label])
        print(f"{label:<42} {m:9.1f} {n_files / m:8.2f} {n_lines / m:9.0f} {printed[label]:13d}  {runs}")

    def ratio(ours: str, theirs: str) -> str:
        return f"{median[theirs] / median[ours]:.2f}x"

    print()
    print("ratios (throughput ours / TorchFix on the same files; > 1 means t2s-opt is faster):")
    print(f"  serial:        jobs=1 vs -j 1: {ratio('t2s-opt check  jobs=1', 'TorchFix       -j 1')}")
    print(f"  parallel:      jobs={j} vs -j {j}: {ratio(f't2s-opt check  jobs={j}', f'TorchFix       -j {j}')}")
    print(
        f"  like-for-like: ours on the {len(torch_files)} torch files "
        "vs TorchFix on the full list (which parses just those): "
        f"serial {ratio('t2s-opt check  jobs=1, torch files only', 'TorchFix       -j 1')}, "
        f"parallel {ratio(f't2s-opt check  jobs={j}, torch files only', f'TorchFix       -j {j}')}"
    )
    print(
        f"  our speed-up from {j} workers: {median['t2s-opt check  jobs=1'] / median[f't2s-opt check  jobs={j}']:.2f}x "
        f"(TorchFix: {median['TorchFix       -j 1'] / median[f'TorchFix       -j {j}']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
