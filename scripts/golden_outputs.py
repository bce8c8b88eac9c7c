"""Dump every user-visible output of ``t2s-opt`` that a refactor must keep byte-identical.

    python scripts/golden_outputs.py dump OUT_DIR      # write the outputs of this checkout
    python scripts/golden_outputs.py compare A B       # list the outputs that differ

What is dumped: ``check`` in every output format on each fixture trainer, on
``reference_trainer/`` and on the inputs of every apply case; ``apply --diff`` (safe default,
``--all`` and ``--unsafe``) on the same targets; ``explain`` of every rule and key; ``rules``.
Paths are made relative to the repository so two checkouts compare equal.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("full", "concise", "json", "sarif", "github")
APPLY_MODES = ((), ("--all",), ("--unsafe",))


def _targets(tmp: Path) -> dict[str, Path]:
    """Name -> folder to check. Apply cases are materialised into ``tmp`` as the case test does."""
    sys.path.insert(0, str(ROOT / "tests" / "apply"))
    import test_fix_cases as cases  # noqa: E402  (the case loader of the test suite)

    targets = {f"fixture/{p.name}": p for p in sorted((ROOT / "fixtures" / "trainers").iterdir()) if p.is_dir()}
    targets["reference_trainer"] = ROOT / "reference_trainer"
    for case in cases.CASES:
        folder = tmp / "cases" / case.key / case.name
        for rel, text in case.inputs.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        targets[f"case/{case.id}"] = folder
    return targets


def _run(args: list[str], cwd: Path) -> str:
    from typer.testing import CliRunner

    from optimizer_tool.cli import app

    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args, env={"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"})
    finally:
        os.chdir(old)
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += f"\nEXCEPTION {type(result.exception).__name__}: {result.exception}"
    return f"exit={result.exit_code}\n{text}"


def _dump_target(job: tuple[str, Path, Path, Path]) -> None:
    name, folder, tmp, out = job
    work = tmp / "work" / name
    shutil.copytree(folder, work, ignore=shutil.ignore_patterns("__pycache__"))
    base = out / name.replace("/", "__")
    base.mkdir(parents=True, exist_ok=True)
    for fmt in FORMATS:
        text = _run(["check", "--no-config", "--output-format", fmt, "."], work)
        (base / f"check.{fmt}.txt").write_text(text.replace(str(work), "<T>"), encoding="utf-8")
    for mode in APPLY_MODES:
        text = _run(["apply", "--diff", *mode, "."], work)
        label = mode[0].strip("-") if mode else "default"
        (base / f"apply.{label}.txt").write_text(text.replace(str(work), "<T>"), encoding="utf-8")


def dump(out: Path, jobs: int = os.cpu_count() or 1) -> None:
    from concurrent.futures import ProcessPoolExecutor

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work = [(name, folder, tmp, out) for name, folder in _targets(tmp).items()]
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_dump_target, work))

    rules = _run(["rules"], ROOT)
    (out / "rules.txt").write_text(rules, encoding="utf-8")
    for line in rules.splitlines()[1:]:
        if line.strip():
            code = line.split()[0]
            (out / f"explain.{code}.txt").write_text(_run(["explain", code], ROOT), encoding="utf-8")
            key = line.split()[1]
            (out / f"explain.{key}.txt").write_text(_run(["explain", key], ROOT), encoding="utf-8")


def compare(a: Path, b: Path) -> int:
    names = sorted(
        {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
        | {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    )
    differ = [
        n for n in names if not (a / n).exists() or not (b / n).exists() or (a / n).read_bytes() != (b / n).read_bytes()
    ]
    for name in differ:
        print(f"differs: {name}")
    print(f"{len(names)} outputs, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or ["help"]
    if command == "dump" and len(rest) == 1:
        dump(Path(rest[0]))
    elif command == "compare" and len(rest) == 2:
        sys.exit(compare(Path(rest[0]), Path(rest[1])))
    else:
        print(__doc__)
        sys.exit(2)
