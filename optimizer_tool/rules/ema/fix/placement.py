"""Where an EMA update goes: right after the optimizer step, in the step's own block, under the EMA's
conditions; inside ``with accelerator.accumulate(...)`` only when ``accelerator.sync_gradients``."""

from __future__ import annotations

import re

import libcst as cst
import libcst.matchers as m

from optimizer_tool.edit.ema import EmaTarget, patch_after
from optimizer_tool.edit.templates import template_expression
from optimizer_tool.index import CallSite, code_of
from optimizer_tool.rules.ema.fix.common import EmaEdit


def after_step(fix: EmaEdit, target: EmaTarget, new: list) -> None:
    """Insert the update statements ``new`` right after the trainer's optimizer step."""
    step = fix.trained.step
    if not fix.visible(target, step.function, step.path):
        raise fix.unreachable(target, step.function, step.path, step.line, "the optimizer step", patch_after(step, new))
    tree = fix.edits.tree(step.path)
    statement = tree.statement(step.node)
    new = target.when_present(fix.edits.module(step.path), new, step, "the optimizer steps")
    accelerator = _accumulating_accelerator(step)
    if accelerator is None:
        fix.edits.insert_after(step.path, statement, new)
        return
    # accelerate: the step runs on every micro-batch; the EMA only after real optimizer steps.
    accumulate = next(
        a
        for a in tree.ancestors(step.node)
        if isinstance(a, cst.With) and any(".accumulate(" in code_of(i.item) for i in a.items)
    )
    sync = m.If(
        test=m.Attribute(value=m.Name(accelerator), attr=m.Name("sync_gradients")),
        orelse=None,
        body=m.IndentedBlock(),
    )
    block = next((s for s in tree.following(accumulate) if m.matches(s, sync)), None)
    if block is not None:
        fix.edits.replace(
            step.path,
            block,
            lambda node: node.with_changes(body=node.body.with_changes(body=[*new, *node.body.body])),
        )
    else:
        test = template_expression(fix.edits.module(step.path), f"{accelerator}.sync_gradients")
        fix.edits.insert_after(step.path, statement, [cst.If(test=test, body=cst.IndentedBlock(body=new))])


def _accumulating_accelerator(step: CallSite) -> str | None:
    """``accelerator`` when the step runs inside ``with accelerator.accumulate(...)`` without a
    ``sync_gradients`` guard of its own."""
    if any("sync_gradients" in g for g in step.guards):
        return None
    for item in step.with_items:
        match = re.match(r"([\w.]+)\.accumulate\(", item)
        if match:
            return match.group(1)
    return None
