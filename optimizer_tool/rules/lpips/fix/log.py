"""Logging the two loss terms beside the loss the training step already logs."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.templates import expression, insert_dict_element, statement
from optimizer_tool.index import CallSite, UnitIndex, code_of, literal
from optimizer_tool.knowledge.training import has_role


def log_terms(ctx: FixContext, index: UnitIndex, edits: Edits, mse: CallSite, terms: dict[str, str]) -> None:
    """Log both loss terms beside the existing loss scalar (``writer.add_scalar``) or accelerate log dict."""
    if _log_to_writer(index, edits, mse, terms) or _log_to_dict(index, edits, mse, terms):
        return
    ctx.note("no loss logging found in the training step: log mse_loss and lpips_loss yourself")


def _log_to_writer(index: UnitIndex, edits: Edits, mse: CallSite, terms: dict[str, str]) -> bool:
    """``writer.add_scalar(...)`` after the MSE term: one more per term after the last of its block,
    under the same tag prefix and step."""
    writes = [
        c
        for c in index.calls_in(mse.function)
        if c.method == "add_scalar" and has_role(index, c.receiver, "writer") and c.line > mse.line and len(c.args) >= 3
    ]
    if not writes:
        return False
    first = writes[0]
    tree = edits.tree(first.path)
    block = tree.block(tree.statement(first.node))
    same_block = [c for c in writes if tree.block(tree.statement(c.node)) is block]
    tag = literal(first.args[0].value)
    prefix = tag.rsplit("/", 1)[0] + "/" if isinstance(tag, str) and "/" in tag else ""
    step_code = code_of(first.args[2].value).strip()
    new = [
        statement(edits.module(first.path), f'{first.receiver}.add_scalar("{prefix}{name}", {var}.item(), {step_code})')
        for name, var in terms.items()
    ]
    edits.insert_after(first.path, tree.statement(same_block[-1].node), new)
    return True


def _log_to_dict(index: UnitIndex, edits: Edits, mse: CallSite, terms: dict[str, str]) -> bool:
    """``accelerator.log({"train_loss": ...})``, ``logs = {"loss": ...}``, ``json.dumps({"step": ..., "loss": ...})``:
    the first dict of logged values after the MSE term that has a loss entry gets the terms before its last entry."""
    dicts = [
        (c.line, c.args[0].value)
        for c in index.calls_in(mse.function)
        if c.line > mse.line and c.args and isinstance(c.args[0].value, cst.Dict)
    ]
    dicts += [
        (a.line, a.value)
        for a in index.assigns
        if a.function == mse.function and a.path == mse.path and a.line > mse.line and isinstance(a.value, cst.Dict)
    ]
    logged = [
        (line, d)
        for line, d in dicts
        if any(
            isinstance(k := literal(e.key), str) and "loss" in k for e in d.elements if isinstance(e, cst.DictElement)
        )
    ]
    if not logged:
        return False
    module = edits.module(mse.path)
    first = min(logged, key=lambda pair: pair[0])[1]

    def with_terms(d: cst.Dict) -> cst.Dict:
        for name, var in terms.items():
            d = insert_dict_element(
                d, len(d.elements) - 1, expression(module, f'"{name}"'), expression(module, f"{var}.detach().item()")
            )
        return d

    edits.replace(mse.path, first, with_terms)
    return True
