"""Turning findings into code changes: select fixes, transform in memory, re-check, then write.

Nothing is written until every selected fix has run and the re-check in memory shows that each
fixed finding is gone and no new finding appeared; then all files are written or none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from optimizer_tool.engine import build_units, run_check
from optimizer_tool.findings import Finding
from optimizer_tool.index import UnitIndex
from optimizer_tool.project import SourceFile, Unit
from optimizer_tool.rules import Optimization, optimizations
from optimizer_tool.rules.base import CannotFix, FixContext
from optimizer_tool.settings import Settings


@dataclass
class FixPlan:
    originals: dict[Path, str] = field(default_factory=dict)
    changed: dict[Path, str] = field(default_factory=dict)  # path -> new source
    fixed: list[Finding] = field(default_factory=list)
    refused: list[CannotFix] = field(default_factory=list)
    new_findings: list[Finding] = field(default_factory=list)
    unfixed: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.new_findings and not self.unfixed


def select(keys: list[str] | None, skip: list[str] | None, unsafe: bool) -> list[Optimization]:
    """``--only`` names optimizations explicitly (safe or not); otherwise only safe fixes run,
    plus the unsafe ones when ``--unsafe`` is given, as ruff does."""
    chosen = []
    for opt in optimizations():
        if opt.fix is None or (skip and opt.key in skip):
            continue
        if keys:
            if opt.key in keys:
                chosen.append(opt)
        elif opt.safe_fix or unsafe:
            chosen.append(opt)
    return chosen


def _rebuilt_unit(unit: Unit, modules: dict[Path, cst.Module]) -> Unit:
    """The unit as the previous fixes left it, so each fix sees the code it will change."""
    files = [SourceFile(f.path, modules[f.path].code, modules[f.path]) for f in unit.files]
    return Unit(next(f for f in files if f.path == unit.entry.path), files, unit.configs)


def plan(paths: list[Path], chosen: list[Optimization], settings: Settings) -> FixPlan:
    before, loaded = run_check(paths, settings)
    result = FixPlan(originals={p: s.text for p, s in loaded.files.items()})
    modules: dict[Path, cst.Module] = {p: s.module for p, s in loaded.files.items()}
    units = build_units(loaded, [Path(p).resolve() for p in paths])
    targets: list[Finding] = []
    for unit in units:
        unit_paths = {f.path for f in unit.files}
        for opt in chosen:
            fix_cls = opt.fix
            findings = [f for f in before.findings if f.code in fix_cls.codes and f.location.path in unit_paths]
            if not findings:
                continue
            index = UnitIndex.build(_rebuilt_unit(unit, modules))
            ctx = FixContext(index, {p: modules[p] for p in unit_paths})
            try:
                fix_cls().apply(ctx, findings)
            except CannotFix as exc:
                result.refused.append(exc)
                continue
            modules.update(ctx.modules)
            targets.extend(findings)
    result.changed = {p: m.code for p, m in modules.items() if m.code != result.originals[p]}
    if not result.changed:
        return result
    after, _ = run_check(paths, settings, overrides=result.changed)
    seen_before = {(f.code, f.location.path) for f in before.findings}
    result.new_findings = [f for f in after.findings if (f.code, f.location.path) not in seen_before]
    remaining = {(f.code, f.location.path) for f in after.findings}
    result.unfixed = [f for f in targets if (f.code, f.location.path) in remaining]
    result.fixed = [f for f in targets if (f.code, f.location.path) not in remaining]
    return result
