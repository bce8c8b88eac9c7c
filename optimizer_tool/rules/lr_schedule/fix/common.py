"""What the lr-schedule fix steps share: the plan's numbers, the source of a warm-up + cosine
schedule, the manual patch suggested on refusal, and small rewrites of warm-up lengths and calls."""

from __future__ import annotations

from typing import Callable

import libcst as cst
import libcst.matchers as m

from optimizer_tool.contract import FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import ensure_setting, set_default
from optimizer_tool.edit.templates import expression, statement, with_keyword
from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import expression_nodes
from optimizer_tool.knowledge.lr_schedule.vocabulary import NEUTRAL_FACTOR, WARMUP_SETTINGS
from optimizer_tool.knowledge.optimizers import optimizer_construction
from optimizer_tool.knowledge.settings import setting_value
from optimizer_tool.knowledge.training import has_role

PLAN_WARMUP_STEPS = 2000  # the plan's warm-up; the code caps it at 10% of the run
MIN_LR_WHY = "the learning rate decays to this fraction of its base value, not to 0"
WARMUP_WHY = "linear learning-rate warm-up, capped at 10% of the optimizer steps"
MIN_LR_HELPER = "get_cosine_with_min_lr_schedule_with_warmup"


def run_step(ctx: FixContext, step: Callable[[Edits], None]) -> None:
    """Run one fix's ``step`` (which adds its edits to the ``Edits`` it is given) and apply them at
    once. The apply engine gives each fix of the package a context of its own, indexed after the
    fixes before it."""
    edits = Edits(ctx)
    step(edits)
    edits.apply()


def min_lr_ratio(edits: Edits, index: UnitIndex, home) -> str:
    """The floor as code: the trainer's ``min_lr_ratio`` setting (added at 1%), or the literal."""
    return ensure_setting(edits, index, home, "min_lr_ratio", "float", "0.01", MIN_LR_WHY) if home else "0.01"


def cosine_decay(torch: str, optimizer: str, total: str, eta_min: str) -> str:
    return (
        f"{torch}.optim.lr_scheduler.CosineAnnealingLR("
        f"{optimizer}, T_max=max(1, {total} - warmup_steps), eta_min={eta_min})"
    )


def warmup_then(torch: str, target: str, optimizer: str, decay: str) -> str:
    """Source of ``target = SequentialLR(...)``: a linear warm-up over ``warmup_steps``, then ``decay``."""
    return (
        f"{target} = {torch}.optim.lr_scheduler.SequentialLR(\n"
        f"    {optimizer},\n"
        f"    [\n"
        f"        {torch}.optim.lr_scheduler.LinearLR("
        f"{optimizer}, start_factor=1.0 / max(1, warmup_steps), total_iters=max(1, warmup_steps)),\n"
        f"        {decay},\n"
        f"    ],\n"
        f"    milestones=[max(1, warmup_steps)],\n"
        f")\n"
    )


def manual_schedule_patch() -> str:
    return (
        "warmup_steps = min(warmup_steps, total_steps // 10)  # total_steps = epochs * optimizer steps per epoch\n"
        + warmup_then(
            "torch", "scheduler", "optimizer", cosine_decay("torch", "optimizer", "total_steps", "0.01 * base_lr")
        )
        + "# ...and scheduler.step() right after every optimizer.step()"
    )


def lr_node(index: UnitIndex, optimizer) -> cst.BaseExpression | None:
    site = optimizer_construction(index, dotted(optimizer)) if optimizer is not None else None
    return site.kwarg("lr") if site is not None else None


def base_lr(index: UnitIndex, optimizer: str, site: CallSite | None = None) -> str:
    """The base learning rate as code: the optimizer's ``lr=`` when it is a name or literal, else its defaults."""
    site = site or optimizer_construction(index, optimizer)
    lr = site.kwarg("lr") if site is not None else None
    if lr is not None and (dotted(lr) or isinstance(literal(lr), (int, float))):
        return code_of(lr).strip()
    return f'{optimizer}.defaults["lr"]'


def setting_read(index: UnitIndex, node) -> str | None:
    """``args.lr_scheduler``: a value read from settings (not a literal)."""
    name = dotted(node)
    return name if name and "." in name and index.setting(name.rsplit(".", 1)[-1]) else None


def is_capped(node) -> bool:
    return (
        isinstance(node, cst.Call)
        and dotted(node.func) == "min"
        or any(isinstance(n, cst.Call) and dotted(n.func) == "min" for n in expression_nodes(node))
    )


def split_factor(node) -> tuple[cst.BaseExpression, cst.BaseExpression | None]:
    """``x * accelerator.num_processes`` -> (x, accelerator.num_processes)."""
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply):
        if NEUTRAL_FACTOR.search(dotted(node.right)):
            return node.left, node.right
        if NEUTRAL_FACTOR.search(dotted(node.left)):
            return node.right, node.left
    return node, None


def capped(module: cst.Module, warmup, total, new: bool = False) -> cst.BaseExpression:
    """``min(warmup, total // 10)``, keeping a shared ``* num_processes`` factor outside (a ``new``
    warm-up setting takes the total's factor: diffusers counts both in scheduler steps)."""
    w, wf = split_factor(warmup)
    t, tf = split_factor(total)
    if new and tf is not None:
        return expression(module, "min({w}, {t} // 10) * {f}", w=warmup, t=atom(t), f=tf)
    if wf is not None and tf is not None and code_of(wf).strip() == code_of(tf).strip():
        return expression(module, "min({w}, {t} // 10) * {f}", w=w, t=atom(t), f=wf)
    return expression(module, "min({w}, {t} // 10)", w=warmup, t=atom(total))


def atom(node: cst.BaseExpression) -> cst.BaseExpression:
    """``node`` parenthesized when it would bind looser than ``//`` or ``*``."""
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def assignment_target(stmt, call: cst.Call) -> str | None:
    if m.matches(
        stmt,
        m.SimpleStatementLine(
            body=[
                m.Assign(
                    targets=[m.AssignTarget(target=m.Name() | m.Attribute())], value=m.MatchIfTrue(lambda n: n is call)
                )
            ]
        ),
    ):
        return dotted(stmt.body[0].targets[0].target)
    return None


def with_argument(call: CallSite, position: int, keyword: str, value: cst.BaseExpression) -> cst.Call:
    """The call with its argument ``keyword`` (or positional ``position``) replaced."""
    if call.kwarg(keyword) is not None:
        return with_keyword(call.node, keyword, value)
    args = list(call.node.args)
    positional = [i for i, a in enumerate(args) if a.keyword is None and not a.star]
    if position < len(positional):
        args[positional[position]] = args[positional[position]].with_changes(value=value)
        return call.node.with_changes(args=args)
    return with_keyword(call.node, keyword, value)


def statements_with_lines(module: cst.Module, original: cst.BaseStatement, sources: list[str]) -> cst.FlattenSentinel:
    """Statements replacing ``original``, the first keeping its leading comments and blank lines."""
    new = [statement(module, s) for s in sources]
    new[0] = new[0].with_changes(leading_lines=original.leading_lines)
    return cst.FlattenSentinel(new)


def warmup_setting(edits: Edits, index: UnitIndex, home) -> str:
    """The trainer's warm-up length setting, added (the plan's 2000 steps) when it has none."""
    if home is None:
        return str(PLAN_WARMUP_STEPS)
    existing = next((n for n in WARMUP_SETTINGS if home.has(n)), None)
    name = existing or ("lr_warmup_steps" if home.kind == "argparse" else "warmup_steps")
    return ensure_setting(edits, index, home, name, "int", str(PLAN_WARMUP_STEPS), WARMUP_WHY)


def plan_warmup_default(ctx, edits: Edits, index: UnitIndex, home, warmup) -> None:
    """The plan's 2000 warm-up steps as the default of the setting a now-capped warm-up reads."""
    read = dotted(split_factor(warmup)[0]) if warmup is not None else ""
    leaf = read.rsplit(".", 1)[-1]
    if home is None or leaf not in WARMUP_SETTINGS or not home.has(leaf) or read != home.read(leaf):
        return
    current = setting_value(index, home, leaf)
    if isinstance(current, int) and not isinstance(current, bool) and current < PLAN_WARMUP_STEPS:
        if set_default(edits, index, home, leaf, PLAN_WARMUP_STEPS):
            ctx.note(
                f"{leaf} default {current} -> {PLAN_WARMUP_STEPS} "
                "(the plan's warm-up; the code caps it at 10% of the run)"
            )


def after_scaler_update(index: UnitIndex, edits: Edits, step: CallSite, step_stmt):
    """The statement to insert after for "right after the optimizer step": ``scaler.update()`` when it
    directly follows ``scaler.step(optimizer)``, else the step itself."""
    tree = edits.tree(step.path)
    siblings = list(tree.block(step_stmt).body)
    position = siblings.index(step_stmt)
    if position + 1 < len(siblings):
        following = siblings[position + 1]
        update = next(
            (
                c
                for c in index.calls_in(step.function)
                if c.method == "update"
                and c.receiver == step.receiver
                and tree.enclosing_in(c.node, tree.block(step_stmt)) is following
            ),
            None,
        )
        if update is not None and has_role(index, step.receiver, "scaler"):
            return following
    return step_stmt
