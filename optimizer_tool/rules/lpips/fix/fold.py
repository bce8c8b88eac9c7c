"""LPIPS005: a whole 5-D video argument gets its frames folded into the batch."""

from __future__ import annotations

from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.templates import expression
from optimizer_tool.index import UnitIndex
from optimizer_tool.rules.lpips.facts import Perceptual
from optimizer_tool.rules.lpips.fix.shared import parenthesized
from optimizer_tool.rules.lpips.tracing import trace


def fold_frames(index: UnitIndex, edits: Edits, perceptual: Perceptual) -> None:
    call = perceptual.call
    module = edits.module(call.path)
    for arg in call.args[:2]:
        t = trace(index, arg.value, call.function, call.line)
        if not t.reduced and not t.opaque:
            # [B, C, T, H, W] -> [B * T, C, H, W]: every frame becomes an image of the batch
            edits.replace(
                call.path,
                arg.value,
                lambda node: expression(module, "{x}.transpose(1, 2).flatten(0, 1)", x=parenthesized(node)),
            )
