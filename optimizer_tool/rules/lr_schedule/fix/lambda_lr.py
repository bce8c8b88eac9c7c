"""Fix step for a ``LambdaLR`` over a local warm-up/cosine function (the reference trainer): its
decaying return gets the floor (``min_lr_ratio + (1 - min_lr_ratio) * cosine``), its warm-up the 10%
cap against the total the factory computes, and the warm-up setting the plan's 2000."""

from __future__ import annotations

import re

import libcst as cst
import libcst.matchers as m

from optimizer_tool.contract import CannotFix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import module_name
from optimizer_tool.edit.templates import expression, statement
from optimizer_tool.edit.tree import names_in_node
from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, code_of, dotted
from optimizer_tool.knowledge.lr_schedule import Schedule, end_value, lambda_target, number_literal
from optimizer_tool.knowledge.lr_schedule.vocabulary import WARMUP_WORD
from optimizer_tool.knowledge.optimizers import optimizer_construction
from optimizer_tool.knowledge.settings import settings_home
from optimizer_tool.knowledge.training import names_in
from optimizer_tool.rules.lr_schedule.fix.add import run_total
from optimizer_tool.rules.lr_schedule.fix.common import (
    atom,
    capped,
    is_capped,
    lr_node,
    manual_schedule_patch,
    min_lr_ratio,
    plan_warmup_default,
)

TOTAL_NAME = re.compile(
    r"^(total|num_training|max_train|train|max|num_train)_?(steps|iters|iterations)$|^total_steps$|^num_steps$", re.I
)


def lambda_lr(ctx: FixContext, edits: Edits, sched: Schedule, codes: set[str]) -> None:
    index, call = ctx.index, sched.site
    tree = edits.tree(call.path)
    home = settings_home(index, call.function, lr_node(index, call.arg(0, "optimizer")))
    if codes == {"LR002"}:  # a warm-up that then stays constant: a cosine decay multiplies it
        _append_decay(index, edits, call, home)
        return
    target = lambda_target(index, call.arg(1, "lr_lambda"), call)
    if target is None:
        raise CannotFix(call.path, call.line, "the LambdaLR's function is not defined here", manual_schedule_patch())
    if isinstance(target, cst.Lambda):
        bodies = [target.body]
        holder = tree.statement(call.node)
        fn_names = names_in(target.body)
    else:
        if call.function is None or not (call.function.line < target.line <= call.function.end_line):
            raise CannotFix(
                call.path,
                call.line,
                f"`{target.name}` is not defined inside the function that builds the schedule",
                manual_schedule_patch(),
            )
        bodies = [r.value for r in index.returns if r.function == target]
        holder = tree.statement(
            next(
                n
                for n in tree.parent
                if isinstance(n, cst.FunctionDef)
                and n.name.value == target.name
                and tree.function(n) is tree.function(call.node)
            )
        )
        fn_names = set().union(
            *[names_in(c.node) for c in index.calls_in(target)],
            *[names_in(a.value) | {a.target} for a in index.assigns if a.function == target],
            *[names_in(b) for b in bodies],
        )
    if codes & {"LR002", "LR007", "LR001"}:
        raise CannotFix(
            call.path,
            call.line,
            "no automatic rewrite of a LambdaLR that lacks a warm-up or a decay",
            manual_schedule_patch(),
        )
    if "LR003" in codes:
        _floor_lambda(index, edits, call, bodies, holder, home, reword=isinstance(target, FunctionInfo))
    if not _cap_lambda_warmup(ctx, index, edits, call, fn_names, home) and "LR004" in codes:
        raise CannotFix(
            call.path,
            call.line,
            "cannot find the warm-up length the LambdaLR reads, to cap it at 10% of the run",
            manual_schedule_patch(),
        )


def _append_decay(index: UnitIndex, edits: Edits, call: CallSite, home) -> None:
    """``LambdaLR(opt, lr_lambda=warmup_lr)`` whose factor rises to 1 and stays there gets a cosine
    factor over the run, down to ``min_lr_ratio``: ``lambda step: warmup_lr(step) * (r + (1 - r) *
    0.5 * (1 + cos(pi * min(step, total) / total)))``. The run's length is the one the schedule-adding
    fix reads (a total-steps setting, epochs x loader, the loops around the optimizer step), and must
    be known where the LambdaLR is built."""
    factor = call.arg(1, "lr_lambda")
    optimizer = dotted(call.arg(0, "optimizer")) if call.arg(0, "optimizer") is not None else ""
    opt_call = optimizer_construction(index, optimizer) if optimizer else None
    if factor is None or opt_call is None or opt_call.path != call.path or opt_call.function != call.function:
        raise CannotFix(
            call.path,
            call.line,
            "cannot find the optimizer this LambdaLR drives, in the same function",
            manual_schedule_patch(),
        )
    tree = edits.tree(call.path)
    total, _, built_at = run_total(index, edits, home, opt_call, tree.statement(opt_call.node))
    if built_at.line > call.line:
        raise CannotFix(
            call.path, call.line, "the run's length is known only after the LambdaLR is built", manual_schedule_patch()
        )
    math = module_name(edits, index, call.path, "math")
    ratio = min_lr_ratio(edits, index, home)
    module = edits.module(call.path)
    if isinstance(factor, cst.Lambda) and len(factor.params.params) == 1:
        step = factor.params.params[0].name.value
        warm = f"({code_of(factor.body).strip()})"
    else:
        step = "step"
        warm = f"{code_of(factor).strip()}(step)"
    total = f"({total})" if re.search(r"[\s+\-*/%]", total) else total
    decayed = expression(
        module,
        f"lambda {step}: {warm} * ({ratio} + (1.0 - {ratio}) * 0.5 * "
        f"(1.0 + {math}.cos({math}.pi * min({step}, {total}) / {total})))",
    )
    edits.replace(call.path, factor, decayed)


def _floor_lambda(index: UnitIndex, edits: Edits, call: CallSite, bodies: list, holder, home, reword: bool) -> None:
    """The return that decays to 0 decays to ``min_lr_ratio`` instead."""
    module = edits.module(call.path)
    tree = edits.tree(call.path)
    to_zero = [b for b in bodies if end_value(b) is False]
    if not to_zero:
        raise CannotFix(call.path, call.line, "cannot find the return that decays to 0", manual_schedule_patch())
    function_node = tree.function(call.node)
    if function_node is not None and "min_lr_ratio" in names_in_node(function_node):
        raise CannotFix(
            call.path, call.line, "`min_lr_ratio` is already used in this function", manual_schedule_patch()
        )
    ratio_value = min_lr_ratio(edits, index, home)
    for body in to_zero:
        edits.replace(call.path, body, lambda node: _floored(module, node, "min_lr_ratio"))
    why = "" if home else "  # decay to 1% of the base rate, not to 0"
    edits.insert_before(call.path, holder, [statement(module, f"min_lr_ratio = {ratio_value}{why}")])
    if reword and function_node is not None:
        _reword_docstring(edits, call.path, function_node)


def _cap_lambda_warmup(ctx, index: UnitIndex, edits: Edits, call: CallSite, fn_names: set[str], home) -> bool:
    """``warmup_steps = <setting>`` read by the lambda becomes ``min(<setting>, total_steps // 10)``
    (the total the factory computes); False when there is no such pair of local lengths to prove it on."""
    local = [a for a in index.assigns if a.function == call.function and a.path == call.path and a.target in fn_names]
    warm = [a for a in local if WARMUP_WORD.search(a.target)]
    total = [a for a in local if TOTAL_NAME.search(a.target)]
    if len(warm) != 1 or len(total) != 1 or is_capped(warm[0].value) or total[0].target in names_in(warm[0].value):
        return False
    tree = edits.tree(call.path)
    stmt = tree.statement(warm[0].value)
    module = edits.module(call.path)
    limited = capped(module, warm[0].value, cst.Name(total[0].target))
    edits.replace(call.path, warm[0].value, limited)
    if isinstance(stmt, cst.SimpleStatementLine) and stmt.trailing_whitespace.comment is None:
        edits.replace(
            call.path,
            stmt,
            lambda node: node.with_changes(
                trailing_whitespace=cst.TrailingWhitespace(
                    cst.SimpleWhitespace("  "), cst.Comment("# at most 10% of the run")
                )
            ),
        )
    plan_warmup_default(ctx, edits, index, home, warm[0].value)
    return True


def _floored(module: cst.Module, node: cst.BaseExpression, ratio: str) -> cst.BaseExpression:
    """``max(0.0, cosine)`` or ``cosine`` -> ``ratio + (1.0 - ratio) * cosine``."""
    inner = node
    if isinstance(node, cst.Call) and dotted(node.func) == "max" and len(node.args) == 2:
        values = [a.value for a in node.args]
        zero = [v for v in values if number_literal(v) == 0]
        if zero:
            inner = next(v for v in values if v is not zero[0])
    if (
        isinstance(inner, cst.BinaryOperation)
        and isinstance(inner.operator, (cst.Add, cst.Subtract))
        or not isinstance(inner, (cst.BinaryOperation, cst.Call, cst.Name, cst.Attribute))
    ):
        inner = atom(inner)
    return expression(module, f"{ratio} + (1.0 - {ratio}) * {{inner}}", inner=inner)


def _reword_docstring(edits: Edits, path, fn_def: cst.FunctionDef) -> None:
    """A factory whose docstring promises a decay "to 0" now decays to the floor."""
    body = fn_def.body.body
    if not body or not m.matches(body[0], m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])):
        return
    doc = body[0].body[0].value
    reworded = re.sub(r"\b(decay(?:s|ing)?\b[^.\"']*?\bto) (?:0|zero)\b", r"\1 min_lr_ratio x the base LR", doc.value)
    if reworded != doc.value:
        edits.replace(path, doc, doc.with_changes(value=reworded))
