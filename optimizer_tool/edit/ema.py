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
    line: int = 0  # where it is created: in ``function``, code above this line cannot use it

    def exists_at(self, at: CallSite) -> bool:
        """Whether the EMA has been created when ``at`` runs (not above its creation in the same function)."""
        return not (at.path == self.path and at.function == self.function and at.line < self.line)

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
    instance = _instance_of(index, obj.target, model)
    if instance is not None:  # ``edm.ema`` beside ``edm.model``: the wrapper's EMA as the training code names it
        return EmaTarget(
            f"{instance.target}.{obj.target.split('.', 1)[1]}",
            api,
            model,
            instance.function,
            instance.path,
            (),
            instance.line,
        )
    return EmaTarget(obj.target, api, model, obj.function, obj.path, conditions, obj.line)


def _instance_of(index: UnitIndex, name: str, model: str):
    """The assignment of the wrapper instance whose EMA ``name`` (``self.ema``) is, when the trained
    network is an attribute of that same instance (``edm.model``; ``edm = EDM(...)``)."""
    if not name.startswith("self.") or model.startswith("self.") or model.count(".") != 1:
        return None
    root = model.split(".", 1)[0]
    if f"{root}.{name.split('.', 1)[1]}" not in ema_facts(index).aliases:
        return None
    built = [a for a in index.assigns if a.target == root and a.call is not None]
    return built[-1] if built else None


def patch_after(step: CallSite, statements: list) -> str:
    """The manual patch that puts ``statements`` right after ``step`` (offered when a fix refuses)."""
    module = cst.Module(body=[])
    lines = "".join(module.code_for_node(s) for s in statements)
    return f"# right after {step.func_text}() (line {step.line}), in the same block:\n{lines}"
