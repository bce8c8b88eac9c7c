"""LPIPS002-004: the plan's perceptual term (under ``torch.no_grad()``, on the noise prediction
rescaled to [0, 1], first frame only) rewritten as the term on the x0 estimate, with gradients."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import CannotFix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.templates import snippet
from optimizer_tool.edit.tree import names_in_node
from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted
from optimizer_tool.knowledge.configured import expression_nodes
from optimizer_tool.knowledge.settings import settings_home
from optimizer_tool.rules.lpips.facts import Perceptual, is_video, mse_calls
from optimizer_tool.rules.lpips.fix.estimate import images, x0_estimate
from optimizer_tool.rules.lpips.fix.settings import lpips_settings
from optimizer_tool.rules.lpips.fix.shared import assigned_name, call_code, manual_patch, outer_call, wrapped
from optimizer_tool.rules.lpips.fix.step import denoising_step


def rewrite_plan_term(ctx: FixContext, index: UnitIndex, edits: Edits, perceptual: Perceptual) -> None:
    """The plan's ``with torch.no_grad():`` block (noise prediction rescaled to [0, 1], first frame)
    becomes the LPIPS term on the x0 estimate, with gradients, under the name the loss already reads."""
    call = perceptual.call
    tree = edits.tree(call.path)
    result, block_stmt, mse = _plan_term(index, tree, perceptual)
    step = denoising_step(index, mse)
    home = settings_home(index, call.function)
    settings = lpips_settings(ctx, edits, index, home, video=is_video(index), new_term=False)
    module = edits.module(call.path)
    taken = names_in_node(tree.function(call.node)) - names_in_node(block_stmt)
    if "x0_pred" in taken:
        raise CannotFix(call.path, call.line, "the name x0_pred is already used in this function", manual_patch())
    x0 = x0_estimate(edits, index, step)
    pred_frames, true_frames = images(edits, index, step, settings, "x0_pred")
    new = snippet(
        module,
        (
            "# LPIPS on the x0 estimate (not the noise prediction), in the [-1, 1] it expects, with gradients\n"
            "# flowing into the prediction (the LPIPS network itself is frozen).\n"
            f"x0_pred = {wrapped(x0)}.clamp(-1, 1)\n"
            f"{result} = {call_code(dotted(call.node.func), pred_frames, true_frames)}.mean()\n"
        ),
    )
    # The plan's comments above the block described what it did wrong: only its blank lines stay.
    blank = [line for line in block_stmt.leading_lines if line.comment is None]
    new[0] = new[0].with_changes(leading_lines=[*blank, *new[0].leading_lines])
    edits.replace(call.path, block_stmt, cst.FlattenSentinel(new))
    _freeze(index, edits, perceptual)


def _plan_term(index: UnitIndex, tree, perceptual: Perceptual) -> tuple[str, cst.BaseStatement, CallSite]:
    """The name the term is assigned to, the statement to replace (the whole ``no_grad`` block when the
    term is computed under one) and the MSE term before it; refuses any other shape."""
    call = perceptual.call
    stmt = tree.statement(call.node)
    result = assigned_name(stmt, call.node) or (
        assigned_name(stmt, outer_call(tree, call.node)) if outer_call(tree, call.node) is not None else None
    )
    holder = tree.owner_statement(stmt)
    block_stmt = holder if isinstance(holder, cst.With) and call.no_grad else stmt
    mse = next((c for c in mse_calls(index) if c.function == call.function and c.line < call.line), None)
    if result is None or mse is None or perceptual.kind != "lpips":
        raise CannotFix(
            call.path,
            call.line,
            "the perceptual term is not `name = lpips_fn(a, b)...` after an MSE term of the same step",
            manual_patch(),
        )
    if block_stmt is holder and any(not isinstance(s, cst.SimpleStatementLine) for s in holder.body.body):
        raise CannotFix(
            call.path, call.line, "the no_grad block holds more than the perceptual term's assignments", manual_patch()
        )
    return result, block_stmt, mse


def _freeze(index: UnitIndex, edits: Edits, perceptual: Perceptual) -> None:
    """``.requires_grad_(False)`` on the LPIPS network when its construction lacks it: with gradients
    flowing through it, its own weights would otherwise collect gradients nobody clears."""
    site = perceptual.constructor
    if site is None:
        return
    assign = next((a for a in index.assigns if any(n is site.node for n in expression_nodes(a.value))), None)
    if assign is None or "requires_grad_" in code_of(assign.value):
        return
    edits.replace(
        assign.path,
        assign.value,
        lambda node: cst.Call(
            func=cst.Attribute(value=node, attr=cst.Name("requires_grad_")), args=[cst.Arg(cst.Name("False"))]
        ),
    )
