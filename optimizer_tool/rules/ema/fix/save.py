"""EMA006: every checkpoint dict handed to ``torch.save`` gets the EMA's state, under a key in the
style of the others (``ema`` or ``ema_state_dict``)."""

from __future__ import annotations

import re

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.ema import EmaTarget
from optimizer_tool.edit.settings import module_name
from optimizer_tool.edit.sidecar import sidecar_path
from optimizer_tool.edit.templates import insert_dict_element, string_literal, template_expression, template_statements
from optimizer_tool.index import CallSite, code_of, dotted, literal
from optimizer_tool.knowledge.training import (
    CHECKPOINT_WRITES,
    assignments_of,
    calls_in_functions_with,
    mentions,
    same_object,
)
from optimizer_tool.rules.ema.fix.common import EmaEdit


def save(fix: EmaEdit, target: EmaTarget) -> bool:
    """Whether the EMA now goes into a checkpoint (False: the trainer saves nothing at all)."""
    saved = False
    checkpoints = _checkpoints_of(fix, target)
    for function in calls_in_functions_with(fix.index, CHECKPOINT_WRITES):
        saves = [(c, p) for c, p in checkpoints if c.function == function]
        saved = saved or bool(saves)
        if not saves or mentions(fix.index, [function], target.name):
            continue
        extended: list = []
        for call, payload in saves:
            if not fix.visible(target, function, call.path):
                raise fix.unreachable(
                    target,
                    function,
                    call.path,
                    call.line,
                    "saving the checkpoint",
                    f'checkpoint["ema"] = {target.name}.state_dict()\n',
                )
            if not any(payload is done for done in extended):  # one dict saved to two files
                _add_to_checkpoint(fix, target, call, payload)
                extended.append(payload)
    if not saved and fix.accelerator() is None and not _beside_bare_saves(fix, target):
        writes = fix.index.calls_to(*CHECKPOINT_WRITES)
        if not writes:
            return False  # the trainer saves nothing at all (minRF): the EMA lives as long as the model
        raise CannotFix(
            writes[0].path,
            writes[0].line,
            "no checkpoint dict (a dict of state dicts handed to torch.save) to add the EMA to, "
            "and no `torch.save(model.state_dict(), path)` to save it beside",
            f'checkpoint["ema"] = {target.name}.state_dict()\n',
        )
    return True


def _beside_bare_saves(fix: EmaEdit, target: EmaTarget) -> bool:
    """A trainer that saves the bare state dict of the averaged model (``torch.save(model.state_dict(),
    f"model_{ep}.pth")``) gets the EMA's state in a file beside each such file (``model_{ep}_ema.pth``),
    written right after it under the EMA's own conditions. False when there is no such save."""
    bare = [c for c in fix.index.calls_to("torch.save") if _saves_state_of(c, target.model)]
    for call in bare:
        if not fix.visible(target, call.function, call.path):
            raise fix.unreachable(
                target, call.function, call.path, call.line, "saving the model", _SIDECAR_PATCH.format(ema=target.name)
            )
        saved_to = call.arg(1, "f")  # a literal path is tagged in place; a variable is split at run time
        path = sidecar_path(saved_to, "ema", None) or sidecar_path(
            saved_to, "ema", module_name(fix.edits, fix.index, call.path, "os")
        )
        if path is None:
            raise CannotFix(
                call.path,
                call.line,
                "cannot name a file beside the one the model is saved to",
                _SIDECAR_PATCH.format(ema=target.name),
            )
        module = fix.edits.module(call.path)
        torch = dotted(call.node.func).rsplit(".", 1)[0] or "torch"
        value = template_expression(module, target.api.save, ema=target.name)
        new = template_statements(module, f"{torch}.save({{value}}, {{path}})", value=value, path=path)
        fix.edits.insert_after(
            call.path, fix.edits.statement_of(call), target.when_present(module, new, call, "the model is saved")
        )
    return bool(bare)


_SIDECAR_PATCH = 'torch.save({ema}.state_dict(), "{{}}_ema{{}}".format(*os.path.splitext(path)))\n'


def _saves_state_of(call: CallSite, model: str) -> bool:
    """``torch.save(model.state_dict(), path)``: the bare state of ``model`` (or of its DDP ``.module``)."""
    obj, path = call.arg(0, "obj"), call.arg(1, "f")
    return (
        path is not None
        and isinstance(obj, cst.Call)
        and isinstance(obj.func, cst.Attribute)
        and obj.func.attr.value == "state_dict"
        and not obj.args
        and bool(model)
        and any(same_object(dotted(obj.func.value), name) for name in (model, f"{model}.module"))
    )


def _checkpoints_of(fix: EmaEdit, target: EmaTarget) -> list:
    """(``torch.save`` call, payload) of every checkpoint dict; only those holding the averaged
    model's state when some do (an evaluator that saves its own classifier is another model)."""
    found = [(c, p) for c in fix.index.calls_to("torch.save") if (p := checkpoint_payload(fix, c)) is not None]
    ours = [(c, p) for c, p in found if _holds(fix, c, p, target.model)]
    return ours or found


def _holds(fix: EmaEdit, save: CallSite, payload, model: str) -> bool:
    """The checkpoint's code mentions ``model`` (``self.model.state_dict()``)."""
    if not model:
        return False
    texts = [code_of(payload)] if isinstance(payload, cst.Dict) else []
    if isinstance(payload, str):
        texts += [
            code_of(i.value)
            for i in fix.index.item_assigns
            if i.container == payload and i.function == save.function and i.path == save.path
        ]
    mention = re.compile(rf"(?<![\w.]){re.escape(model)}\b")
    return any(mention.search(t) for t in texts)


def checkpoint_payload(fix: EmaEdit, save: CallSite):
    """What ``torch.save`` writes, when it is a checkpoint (a dict holding state dicts): the dict
    literal, or the name of a dict filled item by item."""
    payload = save.arg(0, "obj")
    if isinstance(payload, cst.Dict):
        return payload if "state_dict(" in code_of(payload) else None
    name = dotted(payload)
    if not name:
        return None
    built = [a for a in assignments_of(fix.index, name, save.function, save.line) if a.path == save.path]
    if built and isinstance(built[-1].value, cst.Dict) and "state_dict(" in code_of(built[-1].value):
        return built[-1].value
    items = [
        i
        for i in fix.index.item_assigns
        if i.container == name and i.function == save.function and i.path == save.path and i.line < save.line
    ]
    return name if any("state_dict(" in code_of(i.value) for i in items) else None


def _add_to_checkpoint(fix: EmaEdit, target: EmaTarget, save: CallSite, payload) -> None:
    module = fix.edits.module(save.path)
    value = template_expression(module, target.api.save, ema=target.name)
    if isinstance(payload, str):
        fix.key = fix.key or ema_key(
            [i.key for i in fix.index.item_assigns if i.container == payload and i.path == save.path]
        )
        new = template_statements(
            module, f"{{container}}[{string_literal(fix.key)}] = {{value}}", container=payload, value=value
        )
        fix.edits.insert_before(
            save.path,
            fix.edits.statement_of(save),
            target.when_present(module, new, save, "the checkpoint is saved"),
        )
        return
    _add_to_dict(fix, target, save, payload, value)


def _add_to_dict(fix: EmaEdit, target: EmaTarget, save: CallSite, payload: cst.Dict, value) -> None:
    """The checkpoint is a dict literal: the EMA entry goes after the model's."""
    if target.missing_conditions(save):
        raise CannotFix(
            save.path,
            save.line,
            f"`{target.name}` only exists when `{target.conditions[0]}`, and the checkpoint is a dict literal",
            f'if {target.conditions[0]}:\n    checkpoint["ema"] = {target.name}.state_dict()\n',
        )
    keys = [literal(e.key) for e in payload.elements if isinstance(e, cst.DictElement)]
    fix.key = fix.key or ema_key(keys)
    if fix.key in keys:
        raise CannotFix(
            save.path,
            save.line,
            f"the checkpoint already has a {fix.key!r} entry that is not the EMA",
            f'checkpoint["ema_weights"] = {target.name}.state_dict()\n',
        )
    entries = [e for e in payload.elements if isinstance(e, cst.DictElement)]
    model_entry = next(
        (
            i
            for i, e in enumerate(payload.elements)
            if isinstance(e, cst.DictElement) and f"{target.model}.state_dict(" in code_of(e.value)
        ),
        len(payload.elements) - 1,
    )
    key = cst.SimpleString(string_literal(fix.key, entries[0].key if entries else None))
    fix.edits.replace(save.path, payload, lambda node: insert_dict_element(node, model_entry, key, value))


def ema_key(keys: list) -> str:
    """``ema_state_dict`` beside ``model_state_dict``-style keys, else ``ema``."""
    return "ema_state_dict" if any(isinstance(k, str) and k.endswith("_state_dict") for k in keys) else "ema"


def saved_key(fix: EmaEdit, target: EmaTarget) -> str | None:
    """The key an existing checkpoint dict stores the EMA under."""
    for call in fix.index.calls_to("torch.save"):
        payload = checkpoint_payload(fix, call)
        if isinstance(payload, cst.Dict):
            for element in payload.elements:
                if (
                    isinstance(element, cst.DictElement)
                    and target.name in code_of(element.value)
                    and isinstance(literal(element.key), str)
                ):
                    return literal(element.key)
    items = [i for i in fix.index.item_assigns if target.name in code_of(i.value) and isinstance(i.key, str)]
    return items[0].key if items else None
