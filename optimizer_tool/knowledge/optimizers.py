"""The optimizer a trainer steps: the call that built it, the parameters it updates, the
``Accelerator`` that back-propagates for it."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.index import (
    CallSite,
    FunctionInfo,
    UnitIndex,
    code_of,
    dotted,
)
from optimizer_tool.knowledge.training import ROLE_CONSTRUCTORS, same_object

# --- training objects -------------------------------------------------------------------
OPTIMIZER_CONSTRUCTORS = tuple(p for p in ROLE_CONSTRUCTORS["optimizer"] if p != "*.configure_optimizers")


def optimizer_construction(index: UnitIndex, name: str, depth: int = 0) -> CallSite | None:
    """The call that built optimizer ``name`` (through ``accelerator.prepare`` unpacking and aliases)."""
    if depth > 5 or not name:
        return None
    for assign in index.assigns:
        if not same_object(assign.target, name):
            continue
        found = None
        if assign.source:
            found = optimizer_construction(index, assign.source, depth + 1)
        elif assign.call is not None and assign.call.matches(OPTIMIZER_CONSTRUCTORS):
            return assign.call
        elif assign.call is not None and assign.call.method in ("prepare", "to") and assign.call.args:
            found = optimizer_construction(index, dotted(assign.call.args[0].value), depth + 1)
        elif dotted(assign.value) and dotted(assign.value) != name:
            found = optimizer_construction(index, dotted(assign.value), depth + 1)
        if found is not None:
            return found
    return None


def optimizer_parameters(index: UnitIndex, optimizer: str, where: FunctionInfo | None) -> str:
    """Code for the parameters ``optimizer`` updates, readable in ``where``: the expression it was
    built from when that is a plain name or ``model.parameters()`` visible there, else its param groups."""
    site = optimizer_construction(index, optimizer)
    params = site.arg(0, "params") if site is not None else None
    simple = dotted(params) or (
        dotted(params.func.value)
        if isinstance(params, cst.Call)
        and isinstance(params.func, cst.Attribute)
        and params.func.attr.value == "parameters"
        and not params.args
        else ""
    )
    if simple and site is not None and (site.function == where or simple.startswith("self.")):
        return code_of(params).strip()
    return f'[p for group in {optimizer}.param_groups for p in group["params"]]'


def accelerator_of(index: UnitIndex, call: CallSite) -> str:
    """The ``Accelerator`` the function of ``call`` back-propagates with (``accelerator.backward``), or ''."""
    for other in index.calls_in(call.function):
        if (
            other.method == "backward"
            and other.receiver
            and any(o.startswith("accelerate.") for o in index.origins(other.receiver))
        ):
            return other.receiver
    return ""
