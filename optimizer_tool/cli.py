"""``t2s-opt``: check (audit), explain, rules; apply and smoke-test are added by their modules.

Exit codes follow ruff: 0 nothing at or above ``--fail-on``, 1 findings, 2 usage or parse error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from optimizer_tool.apply_cli import apply_command
from optimizer_tool.findings import Severity
from optimizer_tool.project import UsageError
from optimizer_tool.rules import all_rules, keys, optimizations, rule_by_code
from optimizer_tool.smoke.cli import smoke_test

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Audit, fix and smoke-test diffusion training code.")


def _split(values: Optional[List[str]]) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _check_keys(values: list[str], option: str) -> list[str]:
    known = keys()
    bad = [v for v in values if v not in known]
    if bad:
        raise UsageError(f"{option}: unknown optimization(s) {', '.join(bad)}; choose from {', '.join(known)}")
    return values


def fail(message: str) -> "typer.Exit":
    typer.echo(f"t2s-opt: error: {message}", err=True)
    return typer.Exit(2)


@app.command()
def check(
    paths: List[Path] = typer.Argument(..., help="Trainer files or folders."),
    output_format: str = typer.Option("full", "--output-format", help="full | concise | json | sarif | github"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the report to this file."),
    select: Optional[List[str]] = typer.Option(None, help="Only these codes or prefixes (comma-separated)."),
    ignore: Optional[List[str]] = typer.Option(None, help="Skip these codes or prefixes."),
    only: Optional[List[str]] = typer.Option(None, help="Only these optimizations (keys)."),
    skip: Optional[List[str]] = typer.Option(None, help="Skip these optimizations (keys)."),
    fail_on: Optional[Severity] = typer.Option(None, "--fail-on", help="Lowest severity that fails: bug, missing (default), info."),
    no_config: bool = typer.Option(False, "--no-config", help="Ignore [tool.t2s-opt] in pyproject.toml."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Worker processes for parsing and checking (0: one per CPU)."),
) -> None:
    """Report, per optimization, what is missing and what is implemented wrongly."""
    from optimizer_tool import reporters
    from optimizer_tool.engine import run_check
    from optimizer_tool.project import discover, project_root
    from optimizer_tool.settings import Settings, load_settings, merge

    try:
        if output_format not in reporters.FORMATS:
            raise UsageError(f"--output-format must be one of {', '.join(reporters.FORMATS)} (got {output_format!r})")
        targets, _ = discover(paths)
        root = project_root(targets)
        base = Settings() if no_config else load_settings(root, keys())
        settings = merge(
            base,
            select=_split(select),
            ignore=_split(ignore),
            only=_check_keys(_split(only), "--only"),
            skip=_check_keys(_split(skip), "--skip"),
            fail_on=fail_on,
        )
        result, _ = run_check(list(paths), settings, jobs=jobs)
    except UsageError as exc:
        raise fail(str(exc))
    text = reporters.render(result, output_format, color=output is None and sys.stdout.isatty())
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)
    if any(f.is_error for f in result.findings):
        raise typer.Exit(2)
    raise typer.Exit(1 if result.failing(settings) else 0)


@app.command()
def explain(code: str = typer.Argument(..., help="A rule code, e.g. EMA002, or an optimization key.")) -> None:
    """Explain a rule (why it matters, what fixes it) or list an optimization's rules."""
    rule = rule_by_code(code)
    if rule is not None:
        typer.echo(f"{rule.code} ({rule.key}, {rule.severity.value}{', fixable' if rule.fixable else ''}): {rule.title}\n")
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


@app.command("rules")
def list_rules() -> None:
    """List every rule with its code, optimization, severity and whether it can be fixed."""
    for rule in all_rules():
        typer.echo(f"{rule.code:<10} {rule.key:<12} {rule.severity.value:<8} {'fix' if rule.fixable else '   '}  {rule.title}")


app.command("apply")(apply_command)
app.command("smoke-test")(smoke_test)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
