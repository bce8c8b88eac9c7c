"""The plan's helper, kept as its entry point: ``--check`` runs ``t2s-opt check``, ``--apply``
runs ``t2s-opt apply`` with the safe fixes (EMA, warm-up, clipping, monitoring).

    python -m optimizer_tool.quick_optimizations --check [PATH]
    python -m optimizer_tool.quick_optimizations --apply [PATH]

PATH defaults to ``reference_trainer/`` when it exists in the current folder, else the current
folder. The plan's version looked for substrings in trainer.py; this one runs the real audit
and codemods, with their exit codes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def default_path() -> Path:
    reference = Path("reference_trainer")
    return reference if reference.is_dir() else Path(".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="quick_optimizations", description="Check or apply the plan's training optimizations."
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report what is missing or wrong (t2s-opt check)")
    mode.add_argument("--apply", action="store_true", help="apply the safe fixes in place (t2s-opt apply)")
    parser.add_argument("path", nargs="?", type=Path, help="trainer file or folder (default: reference_trainer/ or .)")
    args = parser.parse_args(argv)

    from optimizer_tool.cli import app

    command = ["check" if args.check else "apply", str(args.path or default_path())]
    try:
        app(args=command, prog_name="quick_optimizations")
    except SystemExit as exc:  # the command's exit code: 0 clean/applied, 1 findings, 2 refused/usage
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
