"""The clipping codemod: one step per code, sharing the threshold setting and the unscale call."""

from __future__ import annotations

import re

import libcst as cst

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import ensure_setting, module_name
from optimizer_tool.edit.templates import expression, statement, with_keyword
from optimizer_tool.edit.tree import is_call_statement
from optimizer_tool.index import CallSite, UnitIndex, code_of
from optimizer_tool.knowledge.optimizers import accelerator_of, optimizer_parameters
from optimizer_tool.knowledge.settings import settings_home
from optimizer_tool.knowledge.training import (
    clip_calls,
    exclusive,
    has_role,
    is_torch_clip,
    lightning_trainer_calls,
    optimizer_steps,
    sampling_functions,
)

MAX_GRAD_NORM_WHY = "clip the global gradient norm to this before each optimizer step (try 0.5 for gentler clipping)"


class ClippingFix(Fix):
    """Clip the real gradients right before the optimizer step.

    CLIP001: insert ``torch.nn.utils.clip_grad_norm_(<the optimizer's parameters>, <max_grad_norm>)``
    before every optimizer step (``accelerator.clip_grad_norm_`` under accelerate, under
    ``if accelerator.sync_gradients:`` inside ``accelerator.accumulate``; after
    ``scaler.unscale_(optimizer)``, inserted when missing, with a GradScaler; ``gradient_clip_val``
    on a Lightning Trainer). The threshold is the trainer's ``max_grad_norm`` setting, added as a
    config field or argparse flag with default 1.0 when it has none; an existing value (the plan's
    0.5 included) is kept. CLIP002: move the existing ``scaler.unscale_`` before the clipping, or
    insert one. CLIP003: move the clipping (with the ``if`` that guards only it) before the step.
    """

    applicability = Applicability.SAFE  # only adds code

    codes = ("CLIP001", "CLIP002", "CLIP003")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        edits = Edits(ctx)
        for finding in sorted(findings, key=lambda f: f.code):
            where = (finding.location.path, finding.location.line, finding.location.col)
            if finding.code == "CLIP001":
                _add_clipping(index, edits, where)
            elif finding.code == "CLIP002":
                _unscale_first(index, edits, _call_at(index, where, clip_calls(index)))
            else:
                _clip_before_step(index, edits, _call_at(index, where, clip_calls(index)))
        edits.apply()


# --- shared -------------------------------------------------------------------------
def _threshold(edits: Edits, index: UnitIndex, home) -> str:
    """The trainer's ``max_grad_norm`` setting (added, default 1.0, when it has none); 1.0 without settings."""
    return ensure_setting(edits, index, home, "max_grad_norm", "float", "1.0", MAX_GRAD_NORM_WHY) if home else "1.0"


def _unscale(module: cst.Module, scaler: str, optimizer: str) -> cst.BaseStatement:
    return statement(module, f"{scaler}.unscale_({optimizer})  # clip the real gradients, not the loss-scaled ones")


def _call_at(index: UnitIndex, where, calls: list[CallSite]) -> CallSite:
    found = next((c for c in calls if (c.path, c.line, c.col) == where), None)
    if found is None:
        path, line, _ = where
        raise CannotFix(path, line, "the clipping call this finding names is gone", "")
    return found


def _unscaled_before(index: UnitIndex, scaler: str, step: CallSite) -> bool:
    return any(
        c.method == "unscale_"
        and c.receiver == scaler
        and (c.line, c.col) < (step.line, step.col)
        and not exclusive(c, step)
        for c in index.calls_in(step.function)
    )


def _in_sampling(index: UnitIndex, call: CallSite) -> bool:
    return call.function is not None and call.function in sampling_functions(index)


# --- CLIP001 ------------------------------------------------------------------------
def _add_clipping(index: UnitIndex, edits: Edits, where) -> None:
    """``gradient_clip_val`` on the Lightning Trainer the finding names, else clipping before every
    optimizer step of the training code."""
    trainer = next((c for c in lightning_trainer_calls(index) if (c.path, c.line, c.col) == where), None)
    if trainer is not None:
        value = _threshold(edits, index, settings_home(index, trainer.function))
        module = edits.module(trainer.path)
        edits.replace(
            trainer.path,
            trainer.node,
            lambda node: with_keyword(node, "gradient_clip_val", expression(module, value)),
        )
        return
    steps = [s for s in optimizer_steps(index) if not _in_sampling(index, s)]
    if not steps:
        path, line, _ = where
        raise CannotFix(
            path,
            line,
            "no optimizer step to clip before",
            "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # before optimizer.step()",
        )
    for step in steps:
        _clip_before(index, edits, step)


def _clip_before(index: UnitIndex, edits: Edits, step: CallSite) -> None:
    tree = edits.tree(step.path)
    module = edits.module(step.path)
    anchor = tree.statement(step.node)
    scaler = step.receiver if has_role(index, step.receiver, "scaler") else ""
    optimizer = code_of(step.args[0].value).strip() if scaler and step.args else step.receiver
    params = optimizer_parameters(index, optimizer, step.function)
    threshold = _threshold(edits, index, settings_home(index, step.function))
    if not is_call_statement(anchor, step.node) or not optimizer:
        raise CannotFix(
            step.path,
            step.line,
            f"`{step.text}` is not a statement of its own, so there is no proven place to clip before it",
            f"torch.nn.utils.clip_grad_norm_({params}, {threshold})  # right before {step.text}",
        )
    accelerator = accelerator_of(index, step)
    new: list[cst.BaseStatement] = []
    if accelerator:
        clip = f"{accelerator}.clip_grad_norm_({params}, {threshold})"
        if any(re.search(r"\.accumulate\(", w) for w in step.with_items):
            # Inside accelerator.accumulate the gradients are complete only on sync steps.
            new.append(statement(module, f"if {accelerator}.sync_gradients:\n    {clip}\n"))
        else:
            new.append(statement(module, clip))
    else:
        if scaler and not _unscaled_before(index, scaler, step):
            new.append(_unscale(module, scaler, optimizer))
        torch = module_name(edits, index, step.path, "torch")
        new.append(statement(module, f"{torch}.nn.utils.clip_grad_norm_({params}, {threshold})"))
    edits.insert_before(step.path, anchor, new)


# --- CLIP002 ------------------------------------------------------------------------
def _unscale_first(index: UnitIndex, edits: Edits, clip: CallSite) -> None:
    """Move the scaler's later ``unscale_`` before the clipping, or insert one."""
    tree = edits.tree(clip.path)
    clip_stmt = tree.statement(clip.node)
    here = index.calls_in(clip.function)
    scaler_steps = [
        c
        for c in here
        if c.method == "step" and has_role(index, c.receiver, "scaler") and c.args and not exclusive(c, clip)
    ]
    if not scaler_steps:
        raise CannotFix(
            clip.path,
            clip.line,
            "cannot tell which optimizer the GradScaler steps",
            "scaler.unscale_(optimizer)  # right before the clipping",
        )
    scaler, optimizer = scaler_steps[0].receiver, code_of(scaler_steps[0].args[0].value).strip()
    later = [
        c
        for c in here
        if c.method == "unscale_"
        and c.receiver == scaler
        and (c.line, c.col) > (clip.line, clip.col)
        and not exclusive(c, clip)
    ]
    if not later:
        edits.insert_before(clip.path, clip_stmt, [_unscale(edits.module(clip.path), scaler, optimizer)])
        return
    unscale_stmt = tree.statement(later[0].node)
    if tree.block(unscale_stmt) is not tree.block(clip_stmt) or not is_call_statement(unscale_stmt, later[0].node):
        raise CannotFix(
            clip.path,
            clip.line,
            f"`{later[0].text}` runs after the clipping but in another block: moving it could unscale twice",
            f"{later[0].text}\n{clip.text}",
        )
    edits.move_before(clip.path, unscale_stmt, clip_stmt)


# --- CLIP003 ------------------------------------------------------------------------
def _clip_before_step(index: UnitIndex, edits: Edits, clip: CallSite) -> None:
    """Move the clipping (with an ``if`` that guards only it) right before the step it follows,
    unscaling first under a GradScaler."""
    tree = edits.tree(clip.path)
    steps = [
        s
        for s in optimizer_steps(index)
        if s.path == clip.path
        and s.function == clip.function
        and (s.line, s.col) < (clip.line, clip.col)
        and not exclusive(s, clip)
    ]
    step = steps[-1]
    step_stmt = tree.statement(step.node)
    moved = _clipping_statement(tree, clip, tree.block(step_stmt))
    if moved is None:
        raise CannotFix(
            clip.path,
            clip.line,
            f"the clipping and `{step.text}` are in different blocks: no proven place to move it to",
            f"{clip.text}  # move right before {step.text} (line {step.line})",
        )
    scaler = step.receiver if has_role(index, step.receiver, "scaler") else ""
    if scaler and is_torch_clip(clip) and step.args and not _unscaled_before(index, scaler, step):
        optimizer = code_of(step.args[0].value).strip()
        edits.insert_before(clip.path, step_stmt, [_unscale(edits.module(clip.path), scaler, optimizer)])
    edits.move_before(clip.path, moved, step_stmt)


def _clipping_statement(tree, clip: CallSite, block) -> cst.BaseStatement | None:
    """The statement to move into ``block``: the clipping call's own, or the ``if`` (such as
    ``if accelerator.sync_gradients:``) around it alone; None when neither is in ``block``."""
    moved = tree.statement(clip.node)
    if tree.block(moved) is not block:
        holder = tree.owner_statement(moved)
        if (
            isinstance(holder, cst.If)
            and holder.orelse is None
            and len(holder.body.body) == 1
            and tree.block(holder) is block
        ):
            moved = holder
    if tree.block(moved) is not block or not (is_call_statement(moved, clip.node) or isinstance(moved, cst.If)):
        return None
    return moved
