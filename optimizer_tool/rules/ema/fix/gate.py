"""EMA004: an EMA gated by its own ``update_every`` and by ``step % k`` loses the outer gate and
updates on every optimizer step (``update_every=1``)."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.ema import patch_after
from optimizer_tool.edit.templates import with_keyword, without_comment
from optimizer_tool.index import UNKNOWN, code_of, literal
from optimizer_tool.knowledge.ema import ema_facts
from optimizer_tool.rules.ema.fix.common import EmaEdit, flagged_calls


def gate_once(fix: EmaEdit, findings: list) -> None:
    """EMA004: the EMA is gated by its own ``update_every`` and by ``step % k``: drop the outer
    gate and update on every optimizer step (``update_every=1``)."""
    facts = ema_facts(fix.index)
    flagged = flagged_calls(facts.updates, findings, "EMA004")
    for call in flagged:
        tree = fix.edits.tree(call.path)
        gate = next(a for a in tree.ancestors(call.node) if isinstance(a, cst.If) and "%" in code_of(a.test))
        kept = _without_modulo(gate.test)
        if kept is not None:
            fix.edits.replace(call.path, gate, lambda node, kept=kept: node.with_changes(test=kept))
        elif gate.orelse is None and isinstance(gate.body, cst.IndentedBlock):
            fix.edits.replace(call.path, gate, lambda node: cst.FlattenSentinel(list(node.body.body)))
        else:
            raise CannotFix(
                call.path,
                call.line,
                f"cannot take the EMA update out of `if {code_of(gate.test).strip()}:`",
                patch_after(fix.trained.step, [tree.statement(call.node)]),
            )
    for obj in facts.objects if flagged else ():
        if obj.call is not None and literal(obj.call.kwarg("update_every")) not in (UNKNOWN, 1):
            fix.edits.replace(
                obj.path,
                obj.call.node,
                lambda node: without_comment(with_keyword(node, "update_every", cst.Integer("1")), "update_every"),
            )


def _without_modulo(test: cst.BaseExpression) -> cst.BaseExpression | None:
    """The condition without its ``step % k == 0`` operand (``a and step % k == 0`` -> ``a``); None
    when nothing else is left."""
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        left, right = _without_modulo(test.left), _without_modulo(test.right)
        if left is None:
            return right
        if right is None:
            return left
        return test.with_changes(left=left, right=right)
    return None if "%" in code_of(test) else test
