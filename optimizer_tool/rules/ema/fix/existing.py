"""The EMA the trainer already has, as the other steps drive it: its kind from what built it, and for
a ``deepcopy`` the trainer's own update function or an in-place lerp."""

from __future__ import annotations

import dataclasses

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.ema import EmaTarget, ema_target
from optimizer_tool.knowledge.ema import EMA_NAME, UPDATE_FUNCTION, ema_facts
from optimizer_tool.rules.ema.base import MODEL_PARAMETER
from optimizer_tool.rules.ema.fix.common import EMA_PATCH, EmaEdit

# A ``deepcopy`` of the model averaged in place, when the trainer has no update function of its own.
LERP_UPDATE = (
    "with torch.no_grad():\n"
    "    for averaged, param in zip({ema}.parameters(), {model}.parameters()):\n"
    "        averaged.lerp_(param.detach(), 1 - {decay})\n"
)


def existing_ema(fix: EmaEdit) -> EmaTarget:
    target = ema_target(fix.index, fix.trained.name, fix.ctx.project_files)
    if target is None:
        obj = ema_facts(fix.index).objects[0]
        raise CannotFix(
            obj.path, obj.line, f"`{obj.target}` is an EMA of a kind this fix does not know how to drive", EMA_PATCH
        )
    if not target.api.update:
        target.api = dataclasses.replace(target.api, update=_copy_update(fix))
    return target


def _copy_update(fix: EmaEdit) -> str:
    """The update of a ``deepcopy`` EMA: the trainer's own update function when it has one
    (``update_ema(ema, model, decay)``), else an in-place lerp."""
    for fn in fix.index.functions:
        if not UPDATE_FUNCTION.search(fn.name) or fn.class_name is not None:
            continue
        args = []
        for param in fn.params:
            if EMA_NAME.search(param) or param in ("target", "target_params"):
                args.append("{ema}")
            elif MODEL_PARAMETER.match(param) or param in ("source", "source_params", "params"):
                args.append("{model}")
            elif "decay" in param or param == "rate":
                if any(s.owner == fn.qualname for s in fix.index.setting(param) if s.kind == "param-default"):
                    break  # it has a default: leave it to the function
                args.append("{decay}")
            else:
                break
        else:
            if "{ema}" in args and "{model}" in args:
                return f"{fn.name}({', '.join(args)})"
    return LERP_UPDATE
