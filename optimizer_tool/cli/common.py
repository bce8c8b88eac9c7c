"""What every ``t2s-opt`` command shares: option parsing and the exit-2 error path."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional

import typer

from optimizer_tool.errors import UsageError
from optimizer_tool.registry import keys


def split(values: Optional[List[str]]) -> list[str]:
    """``--only a,b --only c`` -> ``[a, b, c]``."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def check_keys(values: list[str], option: str) -> list[str]:
    known = keys()
    bad = [v for v in values if v not in known]
    if bad:
        raise UsageError(f"{option}: unknown optimization(s) {', '.join(bad)}; choose from {', '.join(known)}")
    return values


def fail(message: str) -> "typer.Exit":
    typer.echo(f"t2s-opt: error: {message}", err=True)
    return typer.Exit(2)


def report_recovery(paths: Iterable[Path]) -> None:
    """Roll back what an interrupted ``apply`` left in the folders of ``paths`` and say so on stderr
    (``check`` and ``apply`` both do it first)."""
    from optimizer_tool.project import SKIP_DIRS
    from optimizer_tool.transaction import recover_targets

    for line in recover_targets(paths, SKIP_DIRS):
        typer.echo(f"t2s-opt: {line}", err=True)
