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
from optimizer_tool.findings import Finding, Severity, State, Verdict
from optimizer_tool.registry import optimizations
from optimizer_tool.verdicts import UnitFacts, counts

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


def _verdict_summary(result: CheckResult) -> str:
    found = counts(result.facts)
    return ", ".join(f"{n} {state.value}" for state, n in found.items())


def _notes(result: CheckResult) -> list[str]:
    """One line per unit that was not (fully) checked: no optimizer step, not a diffusion trainer."""
    return [f"{_rel(f.entry, result.root)}: {f.note}" for f in result.facts if f.note]


def _summary(result: CheckResult) -> str:
    verdicts = _verdict_summary(result)
    tail = f" Verdicts: {verdicts}." if verdicts else ""
    unknown = counts(result.facts).get(State.UNKNOWN, 0)
    notes = "".join(f"{line}\n" for line in _notes(result))
    if not result.findings:
        if unknown:
            return f"{notes}No findings, but {unknown} verdict(s) unknown: check could not see everything.{tail}"
        suppressed = f" ({result.suppressed} suppressed)" if result.suppressed else ""
        passed = f"All checks passed{suppressed}."
        return f"{notes}{passed}{tail}"
    return notes + _finding_summary(result) + tail


def _finding_summary(result: CheckResult) -> str:
    counts: dict[str, int] = {}
    for f in result.findings:
        counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    parts = ", ".join(f"{n} {sev}" for sev, n in sorted(counts.items()))
    # what `apply` may fix when asked (info findings only with --select, as apply does)
    fixable = sum(f.fixable and f.severity is not Severity.INFO for f in result.findings)
    tail = f"; {fixable} fixable with `t2s-opt apply`" if fixable else ""
    return f"Found {len(result.findings)} finding(s) ({parts}){tail}."


STATE_STYLE = {
    State.PRESENT: "[green]present[/]",
    State.MISSING: "[red]missing[/]",
    State.OFF: "[yellow]off by default[/]",
    State.ELSEWHERE: "[cyan]decided elsewhere[/]",
    State.UNKNOWN: "[magenta]unknown[/]",
    State.NOT_APPLICABLE: "[dim]n/a[/]",
}


def _unit_table(result: CheckResult, facts: UnitFacts, titles: dict[str, str]) -> Table:
    table = Table(title=f"t2s-opt check: {_rel(facts.entry, result.root)}", show_lines=False)
    for column in ("optimization", "verdict", "", "item", "code"):
        table.add_column(column)
    failed_codes = {f.code for f in result.findings}
    last_key = None
    for status in (s for s in result.statuses if s.unit == facts.entry):
        state = status.state
        if state == "fail" and status.code not in failed_codes:
            state = "pass"  # every finding of it was suppressed or ignored
        first = status.key != last_key
        verdict = facts.verdicts.get(status.key)
        table.add_row(
            titles.get(status.key, status.key) if first else "",
            STATE_STYLE[verdict.state] if first and verdict is not None else "",
            MARK[state],
            status.title,
            status.code,
        )
        last_key = status.key
    return table


def _explained(facts: UnitFacts) -> list[str]:
    """Why a verdict is not simply present or missing (off by default, unknown, decided elsewhere)."""
    shown = (State.OFF, State.UNKNOWN, State.ELSEWHERE)
    return [
        f"{key}: {v.state.value}: {v.reason}"
        for key, v in facts.verdicts.items()
        if v.state in shown and v.reason and v.reason != facts.note
    ]


def render_full(result: CheckResult, color: bool = False) -> str:
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=color, no_color=not color, width=120)
    titles = {o.key: o.title for o in optimizations()}
    for facts in result.facts:
        if not facts.trains:
            continue  # one line in the summary says so; an all-unknown table says nothing more
        console.print(_unit_table(result, facts, titles))
        for line in _explained(facts):
            console.print(escape(line), highlight=False, soft_wrap=True)
    for finding in result.findings:
        where = f"{_rel(finding.location.path, result.root)}:{finding.location.line}:{finding.location.col}"
        console.print(
            f"{escape(where)} [bold]{finding.code}[/] {escape(f'[{finding.severity.value}] {finding.message}')}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(escape(_summary(result)), highlight=False, soft_wrap=True)
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


JSON_SCHEMA_VERSION = 2  # docs/json-output.md


def _verdict_dict(v: Verdict, root: Path) -> dict:
    where = None
    if v.location is not None:
        where = {"filename": _rel(v.location.path, root), "row": v.location.line, "column": v.location.col}
    return {"state": v.state.value, "reason": v.reason, "location": where}


def _unit_dict(facts: UnitFacts, root: Path) -> dict:
    return {
        "entry": _rel(facts.entry, root),
        "trains": facts.trains,
        "diffusion": facts.diffusion,
        "evidence": facts.evidence,
        "note": facts.note,
        "verdicts": {key: _verdict_dict(v, root) for key, v in facts.verdicts.items()},
    }


def render_json(result: CheckResult) -> str:
    document = {
        "schema_version": JSON_SCHEMA_VERSION,
        "tool": {"name": "t2s-opt", "version": __version__},
        "units": [_unit_dict(f, result.root) for f in result.facts],
        "findings": [_finding_dict(f, result.root) for f in result.findings],
        "summary": {
            "findings": len(result.findings),
            "verdicts": {state.value: n for state, n in counts(result.facts).items()},
        },
    }
    return json.dumps(document, indent=2) + "\n"


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
                "properties": {
                    "t2s-opt/schema_version": JSON_SCHEMA_VERSION,
                    "t2s-opt/units": [_unit_dict(f, result.root) for f in result.facts],
                },
            }
        ],
    }
    return json.dumps(sarif, indent=2) + "\n"
