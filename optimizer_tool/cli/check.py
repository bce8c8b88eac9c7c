"""``t2s-opt check``, ``explain`` and ``rules``.

Exit codes follow ruff: 0 nothing at or above ``--fail-on``, 1 findings, 2 usage or parse error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from optimizer_tool.cli.common import check_keys, fail, report_recovery, split
from optimizer_tool.deep import run_deep
from optimizer_tool.errors import UsageError
from optimizer_tool.registry import keys, optimization_of, optimizations, rule_by_code


def check(
    paths: List[Path] = typer.Argument(..., help="Trainer files or folders."),
    output_format: str = typer.Option("full", "--output-format", help="full | concise | json | sarif | github"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the report to this file."),
    select: Optional[List[str]] = typer.Option(None, help="Only these codes or prefixes (comma-separated)."),
    ignore: Optional[List[str]] = typer.Option(None, help="Skip these codes or prefixes."),
    only: Optional[List[str]] = typer.Option(None, help="Only these optimizations (keys)."),
    skip: Optional[List[str]] = typer.Option(None, help="Skip these optimizations (keys)."),
    fail_on: Optional[List[str]] = typer.Option(
        None,
        "--fail-on",
        help="Lowest severity that fails: bug, missing (default), info; add 'unknown' to fail on any unknown verdict.",
    ),
    no_config: bool = typer.Option(False, "--no-config", help="Ignore [tool.t2s-opt] in pyproject.toml."),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=0, help="Worker processes for parsing and checking (0: one per CPU)."
    ),
) -> None:
    """Report, per optimization, what is missing and what is implemented wrongly."""
    from optimizer_tool import reporters
    from optimizer_tool.engine import run_check
    from optimizer_tool.project import discover, project_root
    from optimizer_tool.settings import Settings, load_settings, merge, parse_fail_on

    try:
        if output_format not in reporters.FORMATS:
            raise UsageError(f"--output-format must be one of {', '.join(reporters.FORMATS)} (got {output_format!r})")
        report_recovery(paths)  # what an interrupted apply left: rolled back
        targets, _ = discover(paths)
        _check_output(output, targets)
        root = project_root(targets)
        base = Settings() if no_config else load_settings(root, keys())
        severity, unknown = parse_fail_on(split(fail_on), "--fail-on")
        settings = merge(
            base,
            select=split(select),
            ignore=split(ignore),
            only=check_keys(split(only), "--only"),
            skip=check_keys(split(skip), "--skip"),
            fail_on=severity,
            fail_on_unknown=unknown,
        )
        result, _ = run_deep(run_check, list(paths), settings, jobs=jobs)  # deeply nested code needs the stack
    except UsageError as exc:
        raise fail(str(exc))
    text = reporters.render(result, output_format, color=output is None and sys.stdout.isatty())
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise fail(f"-o {output}: cannot write the report: {exc.strerror or exc}")
    else:
        typer.echo(text, nl=False)
    if any(f.is_error for f in result.findings):
        raise typer.Exit(2)
    raise typer.Exit(1 if result.failing(settings) or result.unknown(settings) else 0)


def _check_output(output: Optional[Path], targets: list[Path]) -> None:
    """``-o`` must name a new or report file that can be written, never one of the files checked."""
    if output is None:
        return
    resolved = output.resolve()
    if resolved in targets or resolved.suffix == ".py" and resolved.exists():
        raise UsageError(f"-o {output}: is a Python file (one of the inputs?); write the report to another path")
    if resolved.is_dir():
        raise UsageError(f"-o {output}: is a folder; name a file for the report")
    folder = resolved.parent
    if not folder.is_dir():
        raise UsageError(f"-o {output}: folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK) or resolved.exists() and not os.access(resolved, os.W_OK):
        raise UsageError(f"-o {output}: not writable; choose another path")


def explain(code: str = typer.Argument(..., help="A rule code, e.g. EMA002, or an optimization key.")) -> None:
    """Explain a rule (why it matters, what fixes it) or list an optimization's rules."""
    rule = rule_by_code(code)
    if rule is not None:
        opt = optimization_of(rule)
        fixable = ", fixable" if opt.fixable(rule.code) else ""
        typer.echo(f"{rule.code} ({opt.key}, {rule.severity.value}{fixable}): {rule.title}\n")
        typer.echo(rule.message + "\n")
        typer.echo(rule.explain.strip() + "\n")
        return
    for opt in optimizations():
        if opt.key == code:
            typer.echo(f"{opt.key}: {opt.title}\n\n{(opt.module.__doc__ or '').strip()}\n")
            for r in opt.rules:
                typer.echo(f"  {r.code:<10} {r.severity.value:<8} {r.title}")
            return
    raise fail(f"unknown rule code or optimization {code!r}; run `t2s-opt rules` for the list")


def list_rules() -> None:
    """List every rule with its code, optimization, severity and whether it can be fixed."""
    for opt in optimizations():
        for rule in opt.rules:
            fix = "fix" if opt.fixable(rule.code) else "   "
            typer.echo(f"{rule.code:<10} {opt.key:<12} {rule.severity.value:<8} {fix}  {rule.title}")
