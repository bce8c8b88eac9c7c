"""EMA008: sampling functions that use the model get the averaged weights swapped in around their
body (and the live ones back in ``finally``); sampler calls that receive the model get the averaged
module, or a swap around them; diffusers' exported model gets the averaged weights at the end."""

from __future__ import annotations

import re

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.ema import EmaTarget
from optimizer_tool.edit.templates import guarded, template_expression
from optimizer_tool.edit.tree import split_docstring
from optimizer_tool.index import CallSite, code_of, dotted
from optimizer_tool.knowledge.ema import ema_facts
from optimizer_tool.knowledge.training import mentions, ordered_nodes, sampling_functions
from optimizer_tool.rules.ema.base import MODEL_PARAMETER, is_sampler_call, network_receiver
from optimizer_tool.rules.ema.fix.common import EmaEdit

Swap = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # swap in, swap out, imports


def sample_with(fix: EmaEdit, target: EmaTarget) -> bool:
    """Sampling functions that use the model get the averaged weights swapped in around their
    body; sampler calls that receive the model get the averaged module (or a swap around them).
    Whether any sampling now uses the averaged weights."""
    swap = target.api.swap()
    wrapped = _wrap_samplers(fix, target, swap)
    calls = _sampler_calls(fix, target, swap, wrapped)
    exported = _export(fix, target)
    return bool(wrapped or calls or exported)


def _wrap_samplers(fix: EmaEdit, target: EmaTarget, swap: Swap) -> list:
    """The sampling functions that use the model, each wrapped in a swap of the weights."""
    index = fix.index
    training = fix.trained.step.function
    candidates = [
        f
        for f in sampling_functions(index)
        if f != training and not any(MODEL_PARAMETER.match(p) for p in f.params) and mentions(index, [f], target.model)
    ]
    # A sampler called by another one (validation -> self.sample) is swapped by its caller.
    delegated = {
        c.method or c.func_text
        for c in index.calls
        if c.function in candidates and (c.method or c.func_text) != c.function.name
    }
    wrapped = []
    for function in candidates:
        if function.name in delegated or mentions(index, [function], target.name):
            continue
        _wrap_sampler(fix, target, function, swap)
        wrapped.append(function)
    return wrapped


def _wrap_sampler(fix: EmaEdit, target: EmaTarget, function, swap: Swap) -> None:
    swap_in, swap_out, imports = swap
    if not fix.visible(target, function, function.path):
        raise fix.unreachable(
            target, function, function.path, function.line, "sampling", _swap_patch(swap_in, swap_out, target)
        )
    inside = next((c for c in fix.index.calls_in(function) if c.path == function.path), None)
    definition = fix.edits.tree(function.path).function(inside.node) if inside is not None else None
    if definition is None or not isinstance(definition.body, cst.IndentedBlock):
        raise CannotFix(
            function.path,
            function.line,
            f"cannot swap the EMA weights in around `{function.name}`",
            _swap_patch(swap_in, swap_out, target),
        )
    before, after = _swap_statements(fix, target, function.path, swap, inside)
    fix.edits.replace(
        function.path, definition, lambda node, before=before, after=after: _wrap_body(node, before, after)
    )
    for module in imports:
        fix.edits.add_import(function.path, module)


def _swap_statements(fix: EmaEdit, target: EmaTarget, path, swap: Swap, at: CallSite) -> tuple[list, list]:
    """The statements that swap the averaged weights in and the live ones back, under the EMA's conditions."""
    swap_in, swap_out, _ = swap
    module = fix.edits.module(path)
    before = target.when_present(module, [s for t in swap_in for s in fix.statements(path, t, target)], at, "sampling")
    after = target.when_present(module, [s for t in swap_out for s in fix.statements(path, t, target)], at, "sampling")
    return before, after


def _sampler_calls(fix: EmaEdit, target: EmaTarget, swap: Swap, wrapped: list) -> int:
    """Sampler calls that receive the model, outside the wrapped functions: the averaged module is
    passed instead, or the weights are swapped around the call."""
    names = {f.name for f in wrapped}
    done = 0
    model = re.compile(rf"(?<![\w.]){re.escape(target.model)}(?![\w])")
    for call in fix.index.calls:
        if not is_sampler_call(call) or (call.method or call.func_text) in names:
            continue
        on_model = network_receiver(call, target.model) is not None
        holder = not on_model and _holds_model(fix, call, target.model)
        if (
            not (any(model.search(code_of(a.value)) for a in call.node.args) or on_model or holder)
            or call.function in wrapped
            or not fix.visible(target, call.function, call.path)
            or not target.exists_at(call)  # a ``--sampling-only`` branch above the EMA's creation
        ):
            continue
        if any(
            isinstance(a, cst.Try) and a.finalbody is not None and target.name in code_of(a.finalbody)
            for a in fix.edits.tree(call.path).ancestors(call.node)
        ):
            continue  # already swapped in, and out in `finally`
        _sample_with_averaged(fix, target, swap, call, on_model=on_model, by_swap=holder)
        done += 1
    return done


def _holds_model(fix: EmaEdit, call: CallSite, model: str) -> bool:
    """A sampler that is a method of an object built around the network (minRF's ``rf = RF(model)``
    then ``rf.sample(...)``): the averaged weights are swapped into the network around the call."""
    if (
        not model
        or not call.receiver
        or not isinstance(call.node.func, cst.Attribute)
        or call.receiver in (model, *ema_facts(fix.index).names)  # ``model = accelerator.prepare(model)``
    ):
        return False
    built = [
        a
        for a in fix.index.assigns
        if a.target == call.receiver and a.path == call.path and a.call is not None and a.function == call.function
    ]
    return any(dotted(arg.value) == model for a in built for arg in a.call.node.args)


def _sample_with_averaged(
    fix: EmaEdit, target: EmaTarget, swap: Swap, call: CallSite, on_model: bool = False, by_swap: bool = False
) -> None:
    module = fix.edits.module(call.path)
    if target.api.weights and not target.missing_conditions(call) and not by_swap:
        averaged = template_expression(module, target.api.weights, ema=target.name)
        receivers = [call.node.func.value] if on_model else []
        for value in [*receivers, *(a.value for a in call.node.args)]:
            for node in _model_references(value, target.model):
                fix.edits.replace(call.path, node, lambda _, averaged=averaged: averaged)
        return
    before, after = _swap_statements(fix, target, call.path, swap, call)
    fix.edits.replace(
        call.path,
        fix.edits.statement_of(call),
        lambda node, before=before, after=after: cst.FlattenSentinel(guarded(before, [node], after)),
    )
    for imported in swap[2]:
        fix.edits.add_import(call.path, imported)


def _export(fix: EmaEdit, target: EmaTarget) -> bool:
    """diffusers: after training, the exported model gets the averaged weights
    (``unet = accelerator.unwrap_model(unet)`` then ``ema_unet.copy_to(unet.parameters())``)."""
    if target.api.export is None:
        return False
    exported = False
    step = fix.trained.step
    for assign in fix.index.assigns:
        if (
            assign.target != target.model
            or assign.call is None
            or assign.call.method != "unwrap_model"
            or assign.line < step.line
        ):
            continue
        if (
            assign.function != target.function
            or assign.path != target.path
            or mentions(fix.index, [assign.function], f"{target.name}.copy_to")
        ):
            continue
        statement = fix.edits.tree(assign.path).statement(assign.value)
        new = target.when_present(
            fix.edits.module(assign.path),
            fix.statements(assign.path, target.api.export, target),
            assign.call,
            "the model is exported",
        )
        fix.edits.insert_after(assign.path, statement, new)
        exported = True
    return exported


def _swap_patch(swap_in: tuple[str, ...], swap_out: tuple[str, ...], target: EmaTarget) -> str:
    def fill(template: str) -> str:
        weights = (target.api.weights or "").replace("{ema}", target.name)
        return template.replace("{ema}", target.name).replace("{model}", target.model).replace("{weights}", weights)

    return (
        "\n".join([*map(fill, swap_in), "try:", "    ...  # sample", "finally:", *("    " + fill(t) for t in swap_out)])
        + "\n"
    )


def _wrap_body(definition: cst.FunctionDef, before: list, after: list) -> cst.FunctionDef:
    docstring, body = split_docstring(definition.body.body)
    return definition.with_changes(body=definition.body.with_changes(body=[*docstring, *guarded(before, body, after)]))


def _model_references(node: cst.CSTNode, model: str) -> list:
    """The ``model`` expressions inside ``node`` (``model`` in ``model.forward_with_cfg``)."""
    return [n for n in ordered_nodes(node) if isinstance(n, (cst.Name, cst.Attribute)) and dotted(n) == model]
