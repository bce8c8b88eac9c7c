"""The EMA as the fixes drive it (the ema fix, and the monitoring fix that logs its drift): ``EmaTarget``
is the EMA a fix works with (its name, how to drive it from ``optimizer_tool.knowledge.ema``, the network
it averages, the conditions it exists under) with the edit that puts statements under those conditions;
``ema_target`` finds the trainer's existing one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.templates import under
from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.ema import EmaApi, ema_api, ema_facts


@dataclass
class EmaTarget:
    """The EMA the fix works with: its name, how to drive it, the network it averages."""

    name: str
    api: EmaApi
    model: str
    function: object  # FunctionInfo where it is created (None: module level)
    path: Path
    conditions: tuple[str, ...] = ()  # the `if`s it is created under (``args.use_ema``)

    def missing_conditions(self, at: CallSite) -> tuple[str, ...]:
        """The conditions the EMA exists under that do not already hold at ``at``."""
        return tuple(c for c in self.conditions if c not in at.guards)

    def reachable(self, condition: str) -> bool:
        """A ``self.`` EMA's condition can be tested in another method only when it reads ``self``."""
        roots = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)", condition)) - {
            "and",
            "or",
            "not",
            "is",
            "in",
            "None",
            "True",
            "False",
        }
        return not self.name.startswith("self.") or roots <= {"self"}

    def when_present(self, module: cst.Module, statements: list, at: CallSite, what: str) -> list:
        """``statements`` under the EMA's own conditions, where they do not already hold at ``at``."""
        conditions = self.missing_conditions(at)
        if not conditions:
            return statements
        unreachable = [c for c in conditions if not self.reachable(c)]
        if unreachable:
            raise CannotFix(
                at.path,
                at.line,
                f"`{self.name}` only exists when `{unreachable[0]}`, which cannot be tested where {what} happens",
                patch_after(at, statements),
            )
        return under(module, conditions, statements)


def ema_target(index: UnitIndex, model: str, project_files: Mapping[Path, str]) -> EmaTarget | None:
    """The trainer's existing EMA, when ``optimizer_tool.knowledge.ema`` knows how to drive it.
    ``project_files`` is ``FixContext.project_files`` (a helper class the unit does not import yet):
    fixes never read the disk."""
    obj = ema_facts(index).objects[0]
    api = ema_api(index, obj, project_files.get)
    if api is None:
        return None
    conditions = tuple(g for g in (obj.call.guards if obj.call is not None else ()) if "__name__" not in g)
    return EmaTarget(obj.target, api, model, obj.function, obj.path, conditions)


def patch_after(step: CallSite, statements: list) -> str:
    """The manual patch that puts ``statements`` right after ``step`` (offered when a fix refuses)."""
    module = cst.Module(body=[])
    lines = "".join(module.code_for_node(s) for s in statements)
    return f"# right after {step.func_text}() (line {step.line}), in the same block:\n{lines}"
