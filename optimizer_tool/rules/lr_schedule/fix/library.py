"""Fix step for diffusers/transformers schedules (``get_scheduler`` and ``get_*_schedule_with_warmup``):
the warm-up argument is capped at 10% of the run (or added), and the decay gets a floor through a
floored cosine, chosen by a new default ``--lr_scheduler cosine_with_min_lr`` so the flag keeps working.

The floored cosine is transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` where the target
project's transformers has it, else the same schedule from torch's schedulers: ``versions`` says which,
from the project's own requirements and imports, never from the transformers installed here."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import CannotFix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import module_name, set_default
from optimizer_tool.edit.templates import expression, statement
from optimizer_tool.edit.tree import names_taken
from optimizer_tool.index import code_of, dotted
from optimizer_tool.knowledge.lr_schedule import Schedule
from optimizer_tool.knowledge.settings import settings_home
from optimizer_tool.rules.lr_schedule.fix.common import (
    MIN_LR_HELPER,
    assignment_target,
    atom,
    base_lr,
    capped,
    cosine_decay,
    is_capped,
    lr_node,
    manual_schedule_patch,
    min_lr_ratio,
    plan_warmup_default,
    setting_read,
    statements_with_lines,
    warmup_setting,
    warmup_then,
    with_argument,
)
from optimizer_tool.rules.lr_schedule.fix.versions import has_min_lr_helper

SELECTED = "cosine_with_min_lr"  # the --lr_scheduler value that selects the floored cosine
TORCH_FLOOR = (
    "torch's LinearLR then CosineAnnealingLR to min_lr_ratio: the project does not require a transformers "
    f"with {MIN_LR_HELPER} (4.40 or later)"
)


def library_schedule(ctx: FixContext, edits: Edits, sched: Schedule, codes: set[str]) -> None:
    call = sched.site
    optimizer = call.arg(1, "optimizer") if sched.kind == "get_scheduler" else call.arg(0, "optimizer")
    home = settings_home(ctx.index, call.function, lr_node(ctx.index, optimizer))
    new_warmup = _new_warmup(ctx, edits, sched, codes, home)
    if not codes & {"LR001", "LR002", "LR003"}:
        if new_warmup is not None:
            edits.replace(call.path, sched.warmup_len, new_warmup)
        return
    _floor(ctx, edits, sched, optimizer, home, new_warmup)


def _new_warmup(ctx: FixContext, edits: Edits, sched: Schedule, codes: set[str], home) -> cst.BaseExpression | None:
    """The warm-up argument the schedule should get: a new capped setting where it has none (LR007,
    or LR001 on a constant schedule), the existing one capped at 10% of the run, or None."""
    index, call = ctx.index, sched.site
    module = edits.module(call.path)
    total, warmup = sched.total_len, sched.warmup_len
    if "LR007" in codes or "LR001" in codes and not sched.warmup:
        if total is None:
            raise CannotFix(
                call.path,
                call.line,
                "the schedule has no num_training_steps to cap a warm-up against",
                manual_schedule_patch(),
            )
        setting = warmup_setting(edits, index, home)
        return capped(module, expression(module, setting), total, new=True)
    if "LR004" in codes or (warmup is not None and total is not None and not is_capped(warmup)):
        new_warmup = capped(module, warmup, total) if warmup is not None and total is not None else None
        plan_warmup_default(ctx, edits, index, home, warmup)
        return new_warmup
    return None


def _floor(ctx: FixContext, edits: Edits, sched: Schedule, optimizer, home, new_warmup) -> None:
    """Replace the schedule by the floored cosine, or branch to it on the ``--lr_scheduler`` flag."""
    index, call = ctx.index, sched.site
    module = edits.module(call.path)
    total, warmup = sched.total_len, sched.warmup_len
    if total is None:
        raise CannotFix(
            call.path, call.line, "the schedule has no num_training_steps to decay over", manual_schedule_patch()
        )
    ratio = min_lr_ratio(edits, index, home)
    warm = new_warmup if new_warmup is not None else (warmup if warmup is not None else cst.Integer("0"))
    stmt = edits.tree(call.path).statement(call.node)
    assigned = assignment_target(stmt, call.node)
    if assigned is None:
        raise CannotFix(
            call.path,
            call.line,
            "the schedule is not assigned to a name on a line of its own",
            manual_schedule_patch(),
        )
    helper = has_min_lr_helper(index)
    if helper:
        sources = [_helper_source(assigned, optimizer, warm, total, ratio)]
        edits.add_import(call.path, "transformers.optimization", MIN_LR_HELPER)
    else:
        sources = _torch_sources(ctx, edits, sched, assigned, optimizer, warm, ratio)
    name = call.arg(0, "name")
    if setting_read(index, name) is None:
        # A literal schedule name: the floored cosine replaces it.
        if helper:
            edits.replace(
                call.path,
                stmt,
                lambda node: statement(module, sources[0]).with_changes(leading_lines=node.leading_lines),
            )
        else:
            edits.replace(call.path, stmt, lambda node: statements_with_lines(module, node, sources))
            ctx.note(f"the floored cosine is {TORCH_FLOOR}")
        return
    _select_by_flag(ctx, edits, sched, stmt, assigned, sources, new_warmup, helper)


def _helper_source(assigned: str, optimizer, warm, total, ratio: str) -> str:
    return (
        f"{assigned} = {MIN_LR_HELPER}(\n"
        f"    {code_of(optimizer).strip()},\n"
        f"    num_warmup_steps={code_of(warm).strip()},\n"
        f"    num_training_steps={code_of(total).strip()},\n"
        f"    min_lr_rate={ratio},\n"
        f")\n"
    )


def _torch_sources(ctx: FixContext, edits: Edits, sched: Schedule, assigned: str, optimizer, warm, ratio: str):
    """The floored cosine from torch's schedulers: ``warmup_steps = <warm-up>``, then a ``SequentialLR``
    of a linear warm-up and ``CosineAnnealingLR(eta_min=ratio x the base rate)``."""
    call = sched.site
    tree = edits.tree(call.path)
    if names_taken(tree.module, tree.function(call.node) or tree.module, "warmup_steps"):
        raise CannotFix(call.path, call.line, "the name warmup_steps is taken here", manual_schedule_patch())
    torch = module_name(edits, ctx.index, call.path, "torch")
    opt = code_of(optimizer).strip()
    total = code_of(atom(sched.total_len)).strip()
    decay = cosine_decay(torch, opt, total, f"{ratio} * {base_lr(ctx.index, opt)}")
    return [f"warmup_steps = {code_of(warm).strip()}\n", warmup_then(torch, assigned, opt, decay)]


def _select_by_flag(ctx, edits: Edits, sched: Schedule, stmt, assigned: str, sources, new_warmup, helper) -> None:
    """A --lr_scheduler flag (or config field): keep it working, make the floored cosine its default."""
    index, call = ctx.index, sched.site
    module = edits.module(call.path)
    name = call.arg(0, "name")
    selector_home = settings_home(index, call.function, name)
    if selector_home is None or not set_default(edits, index, selector_home, dotted(name).rsplit(".", 1)[-1], SELECTED):
        raise CannotFix(
            call.path,
            call.line,
            f"cannot change the default of `{code_of(name).strip()}` to select a floored cosine",
            f'{code_of(name).strip()} default: "cosine_with_min_lr"\n' + manual_schedule_patch(),
        )
    kept = call.node if new_warmup is None else with_argument(call, 2, "num_warmup_steps", new_warmup)
    indented = "".join(f"    {line}\n" for source in sources for line in source.splitlines())
    why = (
        "cosine decay to a floor of min_lr_rate x the base rate"
        if helper
        else "linear warm-up, then cosine decay to a floor of min_lr_ratio x the base rate"
    )
    branch = statement(
        module,
        f'if {code_of(name).strip()} == "{SELECTED}":\n'
        f"    # {why} (diffusers' get_scheduler has none)\n"
        f"{indented}"
        f"else:\n"
        f"    {assigned} = {{kept}}\n",
        kept=kept,
    )
    edits.replace(call.path, stmt, lambda node: branch.with_changes(leading_lines=node.leading_lines))
    what = f"transformers' {MIN_LR_HELPER}" if helper else TORCH_FLOOR
    ctx.note(f"--lr_scheduler now defaults to {SELECTED} ({what}); the other names still select diffusers' schedules")
