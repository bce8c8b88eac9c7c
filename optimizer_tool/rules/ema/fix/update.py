"""EMA002: an EMA that is never updated gets its update right after the optimizer step. EMA003: an
update that runs before the step or on every micro-step moves there, inside the step's own
accumulation guard."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.ema import EmaTarget, patch_after
from optimizer_tool.edit.tree import is_call_statement
from optimizer_tool.index import code_of
from optimizer_tool.knowledge.ema import ema_facts
from optimizer_tool.rules.ema.fix.common import EmaEdit, flagged_calls
from optimizer_tool.rules.ema.fix.placement import after_step


def add_update(fix: EmaEdit, target: EmaTarget) -> None:
    """EMA002: one update of the EMA right after the optimizer step (in the helper function the
    trainer calls, when the step runs there)."""
    update = target.api.update
    target = fix.at_step(target, update)  # handed to the helper function the step runs in
    after_step(
        fix,
        target,
        fix.statements(
            fix.trained.step.path,
            update,
            target,
            decay=fix.decay_expression() if "{decay}" in update else "",
        ),
    )


def move_updates(fix: EmaEdit, target: EmaTarget, findings: list) -> None:
    """EMA003: the update runs before the optimizer step or on every micro-step: move it to right
    after the step, inside the step's own accumulation guard."""
    step = fix.trained.step
    moved: list = []
    for call in flagged_calls(ema_facts(fix.index).updates, findings, "EMA003"):
        tree = fix.edits.tree(call.path)
        statement = tree.statement(call.node)
        if call.function != step.function or call.path != step.path or not is_call_statement(statement, call.node):
            raise CannotFix(
                call.path,
                call.line,
                f"the EMA update `{code_of(call.node).strip()}` is not a plain statement beside "
                f"{step.func_text}() (line {step.line}); move it to right after that step",
                patch_after(step, [statement]),
            )
        gate = tree.owner_statement(statement)
        step_block = tree.block(tree.statement(step.node))
        if (
            isinstance(gate, cst.If)
            and gate.orelse is None
            and len(gate.body.body) == 1
            and "%" in code_of(gate.test)
            and tree.block(statement) is not step_block
        ):
            fix.edits.remove(call.path, gate)  # the `if i % k == 0:` of a micro-step update goes with it
            moved.append(statement.with_changes(leading_lines=[]))
        else:
            moved.append(fix.edits.detach(call.path, statement))
    if moved:
        after_step(fix, target, moved)
