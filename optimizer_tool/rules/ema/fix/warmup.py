"""EMA005: a horizon longer than the run: switch on the EMA's decay warm-up, or lower a literal
decay to fit the run."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.ema import EmaTarget
from optimizer_tool.edit.templates import with_keyword, without_comment
from optimizer_tool.index import literal
from optimizer_tool.knowledge.ema import DIFFUSERS_EMA, ema_facts, helper_from_class, imported_class
from optimizer_tool.rules.ema.fix.common import EMA_PATCH, EmaEdit, fitting_decay


def warm_up(fix: EmaEdit, target: EmaTarget) -> None:
    """EMA005: a horizon longer than the run: switch on the EMA's decay warm-up, or lower a
    literal decay to fit the run."""
    obj = next((o for o in ema_facts(fix.index).objects if o.call is not None), None)
    if obj is None:
        raise CannotFix(
            target.path,
            1,
            "the EMA's decay is not set where this fix can change it; add a warm-up or lower the decay",
            EMA_PATCH,
        )
    read = fix.ctx.project_files.get
    helper = next(
        (
            imported_class(fix.index, obj.path, o, read)
            for o in obj.call.names
            if imported_class(fix.index, obj.path, o, read) is not None
        ),
        None,
    )
    if helper is not None and "warmup" in helper_from_class(helper).init_params:
        fix.edits.replace(obj.path, obj.call.node, lambda node: with_keyword(node, "warmup", cst.Name("True")))
    elif target.api is DIFFUSERS_EMA:
        fix.edits.replace(obj.path, obj.call.node, lambda node: with_keyword(node, "use_ema_warmup", cst.Name("True")))
    elif isinstance(literal(obj.call.kwarg("decay")), float):
        decay = fitting_decay(fix.index)
        fix.edits.replace(
            obj.path,
            obj.call.node,
            lambda node: without_comment(with_keyword(node, "decay", cst.Float(repr(decay))), "decay"),
        )
    else:
        raise CannotFix(
            obj.path,
            obj.line,
            "the EMA's decay is not a literal this fix can lower and it has no warm-up switch",
            EMA_PATCH,
        )
