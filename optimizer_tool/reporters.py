"""Output formats: a rich checklist table (default), concise, json, sarif, github."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optimizer_tool import __version__
from optimizer_tool.engine import CheckResult
from optimizer_tool.findings import Finding
from optimizer_tool.registry import optimizations

FORMATS = ("full", "concise", "json", "sarif", "github")
MARK = {"pass": "[green]✓[/]", "fail": "[red]✗[/]", "n/a": "[dim]–[/]"}


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def render(result: CheckResult, fmt: str, color: bool = False) -> str:
    if fmt == "full":
        return render_full(result, color)
    return {"concise": render_concise, "json": render_json, "sarif": render_sarif, "github": render_github}[fmt](result)


def render_concise(result: CheckResult) -> str:
    lines = [
        f"{_rel(f.location.path, result.root)}:{f.location.line}:{f.location.col} "
        f"{f.code} [{f.severity.value}] {f.message}"
        for f in result.findings
    ]
    lines.append(_summary(result))
    return "\n".join(lines) + "\n"


def _summary(result: CheckResult) -> str:
    if not result.findings:
        return "All checks passed." if not result.suppressed else f"All checks passed ({result.suppressed} suppressed)."
    counts: dict[str, int] = {}
    for f in result.findings:
        counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    parts = ", ".join(f"{n} {sev}" for sev, n in sorted(counts.items()))
    fixable = sum(f.fixable for f in result.findings)
    tail = f"; {fixable} fixable with `t2s-opt apply`" if fixable else ""
    return f"Found {len(result.findings)} finding(s) ({parts}){tail}."


def render_full(result: CheckResult, color: bool = False) -> str:
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=color, no_color=not color, width=120)
    titles = {o.key: o.title for o in optimizations()}
    for unit in result.units:
        table = Table(title=f"t2s-opt check: {_rel(unit, result.root)}", show_lines=False)
        table.add_column("optimization")
        table.add_column("")
        table.add_column("item")
        table.add_column("code")
        rows = [s for s in result.statuses if s.unit == unit]
        last_key = None
        failed_codes = {(f.code) for f in result.findings}
        for status in rows:
            state = status.state
            if state == "fail" and status.code not in failed_codes:
                state = "pass"  # every finding of it was suppressed or ignored
            table.add_row(
                titles.get(status.key, status.key) if status.key != last_key else "",
                MARK[state],
                status.title,
                status.code,
            )
            last_key = status.key
        console.print(table)
    for finding in result.findings:
        where = f"{_rel(finding.location.path, result.root)}:{finding.location.line}:{finding.location.col}"
        console.print(
            f"{escape(where)} [bold]{finding.code}[/] {escape(f'[{finding.severity.value}] {finding.message}')}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(_summary(result))
    return buffer.getvalue()


def _finding_dict(f: Finding, root: Path) -> dict:
    return {
        "code": f.code,
        "optimization": f.key,
        "severity": f.severity.value,
        "message": f.message,
        "filename": _rel(f.location.path, root),
        "location": {"row": f.location.line, "column": f.location.col},
        "fixable": f.fixable,
    }


def render_json(result: CheckResult) -> str:
    return json.dumps([_finding_dict(f, result.root) for f in result.findings], indent=2) + "\n"


def render_github(result: CheckResult) -> str:
    level = {"bug": "error", "missing": "warning", "info": "notice"}
    out = []
    for f in result.findings:
        message = f.message.replace("%", "%25").replace("\n", "%0A")
        out.append(
            f"::{level[f.severity.value]} title=t2s-opt ({f.code}),file={_rel(f.location.path, result.root)},"
            f"line={f.location.line},col={f.location.col}::{f.code} {message}"
        )
    return "\n".join(out) + ("\n" if out else "")


def render_sarif(result: CheckResult) -> str:
    level = {"bug": "error", "missing": "warning", "info": "note"}
    rules = [
        {
            "id": r.code,
            "name": r.title,
            "shortDescription": {"text": r.message},
            "fullDescription": {"text": r.explain.strip()},
            "properties": {"optimization": opt.key, "severity": r.severity.value},
        }
        for opt in optimizations()
        for r in opt.rules
    ]
    results = [
        {
            "ruleId": f.code,
            "level": level[f.severity.value],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _rel(f.location.path, result.root), "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": f.location.line, "startColumn": f.location.col},
                    }
                }
            ],
        }
        for f in result.findings
    ]
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "t2s-opt",
                        "version": __version__,
                        "informationUri": "https://github.com/t2s-opt/t2s-opt",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(sarif, indent=2) + "\n"
