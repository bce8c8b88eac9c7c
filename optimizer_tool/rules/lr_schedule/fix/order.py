"""Fix steps for where the schedule advances: ``scheduler.step()`` before ``optimizer.step()`` moves
after it (LR006); a per-step schedule stepped in the epoch loop moves after the optimizer step in
the batch loop, and Lightning's ``"interval": "epoch"`` becomes ``"step"`` (LR005)."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.templates import statement, value_like
from optimizer_tool.edit.tree import is_call_statement, node_at
from optimizer_tool.index import CallSite, UnitIndex, code_of
from optimizer_tool.knowledge.training import exclusive, lr_scheduler_steps, optimizer_steps
from optimizer_tool.rules.lr_schedule.fix.common import after_scaler_update
from optimizer_tool.rules.lr_schedule.stepping import step_is_per_epoch


def reorder(index: UnitIndex, edits: Edits, code: str, where) -> None:
    path, line, col = where
    sched_step = next((s for s in lr_scheduler_steps(index) if (s.path, s.line, s.col) == where), None)
    if sched_step is None:
        if code == "LR005":
            _lightning_interval(index, edits, where)
            return
        raise CannotFix(path, line, "cannot find the scheduler step this finding names", "")
    tree = edits.tree(path)
    moved = tree.statement(sched_step.node)
    if not is_call_statement(moved, sched_step.node):
        raise CannotFix(
            path,
            line,
            f"`{sched_step.text}` is not a statement of its own",
            f"{sched_step.text}  # right after optimizer.step()",
        )
    opt = _per_epoch_target(index, sched_step) if code == "LR005" else _later_step(index, sched_step)
    opt_tree = edits.tree(opt.path)
    opt_stmt = opt_tree.statement(opt.node)
    anchor = after_scaler_update(index, edits, opt, opt_stmt)
    if opt.path == path and opt.function == sched_step.function and code == "LR006":
        # An epoch-level scheduler stepped at the top of the epoch: after the loop that steps the optimizer.
        anchor = tree.enclosing_in(anchor, tree.block(moved)) or anchor
    detached = edits.detach(path, moved)
    edits.insert_after(
        opt.path,
        anchor,
        [detached if opt.path == path else statement(edits.module(opt.path), code_of(detached).strip())],
    )


def _per_epoch_target(index: UnitIndex, sched_step: CallSite) -> CallSite:
    """LR005: the optimizer step in the loop the schedule step sits outside of."""
    path, line = sched_step.path, sched_step.line
    opt = step_is_per_epoch(index, sched_step)
    if opt is None:
        raise CannotFix(
            path,
            line,
            "cannot find the optimizer step the schedule should follow",
            f"{sched_step.text}  # right after optimizer.step()",
        )
    if opt.function != sched_step.function and not sched_step.receiver.startswith("self."):
        raise CannotFix(
            path,
            line,
            f"`{sched_step.receiver}` is not visible where `{opt.text}` runs (line {opt.line})",
            f"{sched_step.text}  # right after {opt.text}",
        )
    return opt


def _later_step(index: UnitIndex, sched_step: CallSite) -> CallSite:
    """LR006: the optimizer step that follows the schedule step in the same function."""
    path, line, col = sched_step.path, sched_step.line, sched_step.col
    opt = next(
        (
            o
            for o in optimizer_steps(index)
            if o.path == path
            and o.function == sched_step.function
            and (o.line, o.col) > (line, col)
            and not exclusive(o, sched_step)
        ),
        None,
    )
    if opt is None:
        raise CannotFix(
            path,
            line,
            "cannot find the optimizer step the schedule should follow",
            f"{sched_step.text}  # right after optimizer.step()",
        )
    return opt


def _lightning_interval(index: UnitIndex, edits: Edits, where) -> None:
    path, line, _ = where
    setting = next(
        (s for s in index.setting("interval") if (s.path, s.line, s.col) == where and s.kind == "dict"), None
    )
    if setting is None:
        raise CannotFix(
            path,
            line,
            'Lightning\'s scheduler config has no "interval" key to set',
            'return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}',
        )
    module = edits.module(path)
    node = node_at(module, setting.line, setting.col, cst.DictElement)
    edits.replace(path, node, lambda n: n.with_changes(value=value_like("step", n.value, module)))
