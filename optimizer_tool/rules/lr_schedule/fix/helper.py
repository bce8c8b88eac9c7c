"""A schedule for an optimizer stepped in a helper function (``train_one_epoch(model, loader,
optimizer)`` called from the function that builds the optimizer): the schedule is built beside the
optimizer and handed to the helper as ``lr_scheduler=None`` (stepped there under ``if lr_scheduler is
not None:``), or passed where the helper already takes a schedule that its only caller leaves at
None (``train_one_epoch(..., lrs=None)`` with ``if lrs is not None: lrs.step()`` after the step)."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.handoff import hand_over, handover_patch
from optimizer_tool.edit.templates import expression, with_keyword
from optimizer_tool.index import CallSite, UnitIndex, literal
from optimizer_tool.knowledge.helpers import HelperCall, NotHandedOver, helper_call
from optimizer_tool.knowledge.training import has_role, same_object, stepped_optimizer
from optimizer_tool.rules.lr_schedule.fix.common import manual_schedule_patch


def steps_in_helper(
    index: UnitIndex, opt_call: CallSite, optimizer: str, steps: list[CallSite], reach
) -> tuple[list[CallSite], HelperCall | None]:
    """The steps of ``optimizer`` the new schedule cannot reach (``reach(step)`` is False), all in one
    helper that only the optimizer's function calls, with that helper; a step that is ``optimizer``'s
    by name and cannot be handed over is refused with the reason."""
    found: list[CallSite] = []
    handed: HelperCall | None = None
    for step in steps:
        if reach(step):
            continue
        stepped = stepped_optimizer(step)
        ours = same_object(stepped, optimizer)
        if not ours and (step.function is None or stepped not in step.function.params):
            continue
        try:
            call = helper_call(
                index, step, lambda function, path: function == opt_call.function and path == opt_call.path
            )
        except NotHandedOver as exc:
            if not ours:
                continue
            raise _refused(step, optimizer, str(exc)) from None
        if call.parameter_for(optimizer) != stepped.split(".", 1)[0]:
            if not ours:
                continue
            raise _refused(step, optimizer, f"its call does not pass `{optimizer}` as `{stepped}`")
        if handed is not None and handed.helper != call.helper:
            raise _refused(step, optimizer, f"`{optimizer}` is also stepped in `{handed.helper.name}`")
        handed = call
        found.append(step)
    return found, handed


def _refused(step: CallSite, optimizer: str, why: str) -> CannotFix:
    name = f"`{step.function.name}`" if step.function is not None else "module level"
    return CannotFix(
        step.path,
        step.line,
        f"`{step.text}` runs in {name}, another function than the one that builds `{optimizer}`, "
        f"and the schedule cannot be handed to it: {why}",
        manual_schedule_patch(),
    )


def existing_parameter(index: UnitIndex, handed: HelperCall) -> str | None:
    """The helper's own schedule parameter (``lrs``), stepped in the optimizer step's loop, when every
    call leaves it at None: the new schedule is passed there instead of a second one."""
    step = handed.inside
    for param in handed.helper.params:
        stepped = [c for c in index.calls_in(handed.helper) if c.method == "step" and c.receiver == param]
        if not stepped or not (has_role(index, param, "lr_scheduler") or _plain_step(index, param, stepped)):
            continue
        values = [handed.bound(site, param) for site in handed.sites]
        if any(v is not None and literal(v) is not None for v in values) or any(
            v is None and handed.default(param) != "None" for v in values
        ):
            raise _refused(
                step, stepped_optimizer(step), f"`{handed.helper.name}` already receives a schedule as `{param}`"
            )
        if any(c.loops != step.loops for c in stepped):
            raise _refused(
                step,
                stepped_optimizer(step),
                f"`{handed.helper.name}` steps `{param}` outside the optimizer step's loop",
            )
        return param
    return None


def _plain_step(index: UnitIndex, param: str, stepped: list[CallSite]) -> bool:
    """``lrs.step()``: a parameter stepped without arguments (noise schedulers take the model output)
    that is no optimizer, gradient scaler or EMA."""
    return all(not c.node.args for c in stepped) and not any(
        has_role(index, param, role) for role in ("optimizer", "scaler", "ema")
    )


def pass_schedule(index: UnitIndex, edits: Edits, handed: HelperCall, scheduler: str) -> None:
    """Hand ``scheduler`` to the helper and step it right after the optimizer step there."""
    step = handed.inside
    param = existing_parameter(index, handed)
    if param is not None:
        for site in handed.sites:
            value = handed.bound(site, param)
            new = expression(edits.module(site.path), scheduler)
            if value is None:
                edits.replace(site.path, site.node, lambda node, p=param, n=new: with_keyword(node, p, n))
            else:
                edits.replace(site.path, value, new)
        return
    name = scheduler.rsplit(".", 1)[-1]
    if not handed.free(name):
        raise _refused(step, stepped_optimizer(step), f"`{name}` is already a name in `{handed.helper.name}`")
    hand_over(edits, handed, name, scheduler)


def stepped_in_helper(module: cst.Module, scheduler: str) -> cst.BaseStatement:
    """``lr_scheduler.step()`` under ``if lr_scheduler is not None:`` (the helper's other callers pass none)."""
    name = scheduler.rsplit(".", 1)[-1]
    return cst.parse_statement(f"if {name} is not None:\n    {name}.step()\n", config=module.config_for_parsing)


def helper_patch(handed: HelperCall, scheduler: str) -> str:
    name = scheduler.rsplit(".", 1)[-1]
    return manual_schedule_patch() + "\n" + handover_patch(handed, name, "scheduler", f"{name}.step()")
