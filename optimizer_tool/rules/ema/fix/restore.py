"""EMA007: where a run resumes (the optimizer state is loaded from a checkpoint dict), the EMA's state
is loaded from the same dict, under the key it is saved with, when the checkpoint has it."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.ema import EmaTarget
from optimizer_tool.edit.templates import string_literal, template_expression, template_statements
from optimizer_tool.index import dotted
from optimizer_tool.knowledge.training import has_role, mentions, same_object
from optimizer_tool.rules.ema.fix.common import EmaEdit
from optimizer_tool.rules.ema.fix.save import saved_key


def restore(fix: EmaEdit, target: EmaTarget) -> None:
    index = fix.index
    for resume in [c for c in index.method_calls("load_state_dict") if has_role(index, c.receiver, "optimizer")]:
        function = resume.function
        if mentions(index, [function], target.name):
            continue
        argument = resume.arg(0, "state_dict")
        container = dotted(argument.value) if isinstance(argument, cst.Subscript) else ""
        key = fix.key or saved_key(fix, target) or "ema"
        patch = f'if "{key}" in checkpoint:\n    {target.name}.load_state_dict(checkpoint["{key}"])\n'
        if not container:
            raise CannotFix(
                resume.path,
                resume.line,
                f"cannot tell which checkpoint `{resume.func_text}()` loads from; load the EMA next to it",
                patch,
            )
        if not fix.visible(target, function, resume.path):
            raise fix.unreachable(target, function, resume.path, resume.line, "resuming", patch)
        module = fix.edits.module(resume.path)
        model_load = next(
            (
                c
                for c in index.calls_in(function)
                if c.method == "load_state_dict" and same_object(c.receiver, target.model) and c.path == resume.path
            ),
            resume,
        )
        subscript = argument.slice[0].slice
        quoted = string_literal(key, subscript.value if isinstance(subscript, cst.Index) else None)
        load = template_expression(module, target.api.load, ema=target.name, state=f"{container}[{quoted}]")
        new = template_statements(
            module, f"if {quoted} in {{container}}:\n    {{load}}\n", container=container, load=load
        )
        new = target.when_present(module, new, model_load, "the run resumes")
        fix.edits.insert_after(resume.path, fix.edits.statement_of(model_load), new)
