"""``t2s-opt apply``: the command line of ``optimizer_tool.apply``.

Exit codes: 0 applied (or nothing to do) and nothing of the applied optimizations is left;
1 ``--diff`` printed changes, or findings of the applied optimizations remain (no automatic
fix, or the re-check in memory failed and nothing was written); 2 refused (a file does not
parse, a fix cannot anchor its change, uncommitted changes without ``--force``) or usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from optimizer_tool.apply import (
    ApplyError,
    FixPlan,
    Request,
    check_inside,
    check_out,
    copy_project,
    plan,
    select,
    source_of,
    uncommitted,
    write_all,
)
from optimizer_tool.cli.common import check_keys, fail, report_recovery, split
from optimizer_tool.deep import run_deep
from optimizer_tool.errors import UsageError
from optimizer_tool.findings import Finding
from optimizer_tool.project import discover, project_root
from optimizer_tool.registry import keys, optimizations, rule_by_code
from optimizer_tool.settings import Settings, load_settings
from optimizer_tool.transaction import Interrupted
from optimizer_tool.verify import display, unified_diff


def apply_command(
    paths: Optional[List[Path]] = typer.Argument(None, help="Trainer files or folders (default: the current folder)."),
    only: Optional[List[str]] = typer.Option(
        None, "--only", help="Apply exactly these optimizations (keys, comma-separated), safe or not."
    ),
    everything: bool = typer.Option(
        False, "--all", help="Apply every fix, unsafe ones included, except resolution (only with --only resolution)."
    ),
    select_codes: Optional[List[str]] = typer.Option(
        None, "--select", help="Apply the fixes of these codes or prefixes (EMA003,CLIP), safe or not."
    ),
    skip: Optional[List[str]] = typer.Option(None, "--skip", help="Never apply these optimizations (keys)."),
    unsafe: bool = typer.Option(
        False, "--unsafe", help="Also apply fixes that change the training objective (vpred, lpips, schedules)."
    ),
    diff: bool = typer.Option(False, "--diff", help="Write nothing; print a unified diff and exit 1 if there is one."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write a patched copy of the project folder to DIR; the original stays untouched."
    ),
    force: bool = typer.Option(
        False, "--force", help="Apply in place even where git shows uncommitted changes in the files to change."
    ),
    no_config: bool = typer.Option(False, "--no-config", help="Ignore the \\[tool.t2s-opt] table of pyproject.toml."),
) -> None:
    """Turn check's findings into code changes (libcst); re-checked in memory, written all or nothing."""
    targets = list(paths or [Path(".")])
    try:
        only_keys = check_keys(split(only), "--only")
        skip_keys = check_keys(split(skip), "--skip")
        codes = _check_codes(split(select_codes))
        _check_combination(only_keys, everything, diff, out, targets, codes)
        report_recovery(targets)  # what an interrupted apply left: rolled back
        discovered, _ = discover(targets)
        root = project_root(discovered)
        settings = Settings() if no_config else load_settings(root, keys())
        chosen = select(only_keys, skip_keys, unsafe, everything, codes)
        request = Request(tuple(codes), tuple(only_keys), everything, unsafe)
        result = run_deep(plan, targets, chosen, settings, skip_keys, request)
    except UsageError as exc:
        raise fail(str(exc))

    if not result.ok or (result.held_back and not result.changed):
        typer.echo(refusal(result, root), err=True, nl=False)
        raise typer.Exit(2 if result.input_errors or result.refused else 1)
    if diff:
        typer.echo(unified_diff(result.originals, result.changed, root), nl=False)
        typer.echo(summary(result, root, written=[]), err=True, nl=False)
        typer.echo(held_back(result, root), err=True, nl=False)
        raise typer.Exit(1 if result.changed else 0)
    try:
        written = _write(result, targets, out, force)
    except (UsageError, ApplyError) as exc:
        raise fail(str(exc))
    except Interrupted as exc:  # Ctrl-C while writing: rolled back (or finished), and the message says which
        typer.echo(f"t2s-opt: {exc}", err=True)
        raise typer.Exit(128 + exc.signum)
    typer.echo(summary(result, root, written=written), nl=False)
    if result.held_back:
        typer.echo(held_back(result, root), err=True, nl=False)
    raise typer.Exit(1 if result.remaining or result.held_back else 0)


def _check_codes(codes: list[str]) -> list[str]:
    """``--select`` values: codes or prefixes of fixable rules, upper-cased."""
    wanted = [c.strip().upper() for c in codes if c.strip()]
    fixable = {code for opt in optimizations() for code in opt.fixable_codes}
    unknown = [c for c in wanted if not any(code.startswith(c) for code in fixable)]
    if unknown:
        raise UsageError(f"--select: {', '.join(unknown)} matches no fixable rule; `t2s-opt rules` lists the codes")
    return wanted


def _check_combination(
    only_keys: list[str], everything: bool, diff: bool, out: Optional[Path], targets: list[Path], codes: list[str]
) -> None:
    """Usage errors in how the options combine, found before anything is read."""
    if only_keys and everything:
        raise UsageError("--only and --all exclude each other")
    if codes and (only_keys or everything):
        raise UsageError("--select names codes; drop --only/--all (or --select)")
    if diff and out is not None:
        raise UsageError("--diff writes nothing; drop --out (or --diff)")
    if out is not None and len(targets) != 1:
        raise UsageError("--out copies one project: pass one folder or file")
    if out is not None and targets[0].exists():
        check_out(source_of(targets[0]), out)
    without_fix = [k for k in only_keys if not next(o for o in optimizations() if o.key == k).fixes]
    if without_fix:
        raise UsageError(
            f"--only: {', '.join(without_fix)} has no automatic fix yet; "
            f"`t2s-opt explain {without_fix[0]}` shows the manual change"
        )


def _write(result: FixPlan, targets: list[Path], out: Optional[Path], force: bool) -> list[Path]:
    """The changed files, written into a copy of the project at ``out``, or in place once git shows
    nothing uncommitted in them (unless ``force``); all or nothing. Returns the paths written, sorted."""
    changes, originals = result.encoded()
    if out is not None:
        files = None if targets[0].is_dir() else result.originals
        copies = copy_project(source_of(targets[0], result.originals), out, result.changed, files)
        changes = {copies[p]: data for p, data in changes.items()}
        originals = {copies[p]: data for p, data in originals.items()}
    else:
        check_inside(result.changed, targets)
        dirty = [] if force or not result.changed else uncommitted(list(result.changed))
        if dirty:
            raise ApplyError(
                "refusing to change files with uncommitted changes (commit or stash them so the fix can be reviewed "
                "and reverted with git, or pass --force):\n" + "".join(f"  {line}\n" for line in dirty)
            )
    write_all(changes, originals)
    return sorted(changes)


def _line(finding: Finding, root: Path) -> str:
    where = f"{display(finding.location.path, root)}:{finding.location.line}:{finding.location.col}"
    return f"{where} {finding.code} {finding.message}"


def held_back(result: FixPlan, root: Path) -> str:
    """The optimizations left out, each with its reason and, where there is one, the manual patch."""
    out: list[str] = []
    for held in result.held_back:
        exc = held.refusal
        if exc is not None:
            out.append(
                f"not applied: the {held.key} fix cannot place its change: "
                f"{display(exc.path, root)}:{exc.line}: {exc.message}\n"
            )
            if exc.patch.strip():
                out.append(
                    "  suggested manual patch:\n" + "".join(f"    {line}\n" for line in exc.patch.rstrip().splitlines())
                )
            out.append(f"  apply it by hand, or leave this optimization out with --skip {held.key}\n")
        else:
            out.append(f"not applied: the {held.key} fix {held.why}:\n")
            out += [f"  {_line(f, root)}\n" for f in held.findings]
    return "".join(out)


def refusal(result: FixPlan, root: Path) -> str:
    """Why nothing was written, with what the user can do about it."""
    out: list[str] = []
    if result.input_errors:
        out.append("refusing to apply: these files cannot be parsed (fix them first):\n")
        out += [f"  {_line(f, root)}\n" for f in result.input_errors]
    out.append(held_back(result, root))
    if result.unfixed:
        out.append("aborting: after the fixes the re-check still reports:\n")
        out += [f"  {_line(f, root)}\n" for f in result.unfixed]
    if result.blocking:
        out.append("aborting: the fixes would introduce these findings:\n")
        out += [f"  {_line(f, root)}\n" for f in result.blocking]
    out.append("nothing was written\n")
    return "".join(out)


def summary(result: FixPlan, root: Path, written: list[Path]) -> str:
    """Per optimization, what was fixed where; what the fixes noted; what is now recommended."""
    out: list[str] = []
    if not result.fixed and not result.changed:
        out.append("nothing to fix" + (" for the selected optimizations" if result.remaining else "") + "\n")
    by_key: dict[str, list[Finding]] = {}
    for finding in result.fixed:
        by_key.setdefault(finding.key, []).append(finding)
    for key, findings in by_key.items():
        why = f" (required by {', '.join(sorted(result.required_by[key]))})" if key in result.required_by else ""
        out.append(f"{key}{why}:\n")
        for f in findings:
            rule = rule_by_code(f.code)
            out.append(
                f"  fixed {f.code} {rule.title if rule else ''} in {display(f.location.path, root)}:{f.location.line}\n"
            )
        out += [f"  {note}\n" for k, note in result.notes if k == key]
    if result.advice:
        out.append("now recommended (not applied):\n")
        out += [f"  {_line(f, root)}\n" for f in result.advice]
        advised = sorted({f.key for f in result.advice if f.fixable})
        if advised:
            out.append(f"  apply with: t2s-opt apply --only {','.join(advised)}\n")
    if result.remaining:
        out.append("still reported for the applied optimizations (no automatic fix):\n")
        out += [f"  {_line(f, root)}\n" for f in result.remaining]
    if written:
        out.append(f"wrote {len(written)} file(s):\n" + "".join(f"  {display(p, root)}\n" for p in written))
    elif result.changed:
        out.append(f"would change {len(result.changed)} file(s); nothing written (--diff)\n")
    return "".join(out)
