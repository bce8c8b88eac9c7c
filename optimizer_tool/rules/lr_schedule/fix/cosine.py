"""Fix step for ``CosineAnnealingLR``: ``eta_min=min_lr_ratio * lr`` (LR003), and a ``LinearLR`` warm-up
in front of it in a ``SequentialLR`` when it has none (LR007)."""

from __future__ import annotations

from optimizer_tool.contract import CannotFix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import module_name
from optimizer_tool.edit.templates import expression, with_keyword
from optimizer_tool.index import code_of
from optimizer_tool.knowledge.lr_schedule import Schedule
from optimizer_tool.knowledge.settings import settings_home
from optimizer_tool.rules.lr_schedule.fix.common import (
    assignment_target,
    base_lr,
    lr_node,
    manual_schedule_patch,
    min_lr_ratio,
    statements_with_lines,
    warmup_setting,
    warmup_then,
    with_argument,
)


def cosine_annealing(ctx: FixContext, edits: Edits, sched: Schedule, codes: set[str]) -> None:
    index, call = ctx.index, sched.site
    module = edits.module(call.path)
    optimizer = call.arg(0, "optimizer")
    home = settings_home(index, call.function, lr_node(index, optimizer))
    ratio = min_lr_ratio(edits, index, home)
    eta_min = expression(module, f"{ratio} * {base_lr(index, code_of(optimizer).strip())}")
    if "LR007" not in codes:
        if call.kwarg("eta_min") is None and len(call.args) <= 2:
            edits.replace(call.path, call.node, lambda node: with_keyword(node, "eta_min", eta_min))
        return
    stmt = edits.tree(call.path).statement(call.node)
    assigned = assignment_target(stmt, call.node)
    total = call.arg(1, "T_max")
    if assigned is None or total is None or sched.per_step is not True:
        raise CannotFix(
            call.path,
            call.line,
            "cannot prove the schedule counts optimizer steps to put a warm-up in front of it",
            manual_schedule_patch(),
        )
    warmup = warmup_setting(edits, index, home)
    opt = code_of(optimizer).strip()
    torch = module_name(edits, index, call.path, "torch")
    cosine = with_argument(call, 1, "T_max", expression(module, f"max(1, {code_of(total).strip()} - warmup_steps)"))
    if call.kwarg("eta_min") is None and len(call.args) <= 2:
        cosine = with_keyword(cosine, "eta_min", eta_min)
    edits.replace(
        call.path,
        stmt,
        lambda node: statements_with_lines(
            module,
            node,
            [
                f"warmup_steps = min({warmup}, {code_of(total).strip()} // 10)  # at most 10% of the run",
                warmup_then(torch, assigned, opt, code_of(cosine).strip()),
            ],
        ),
    )
