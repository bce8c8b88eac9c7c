"""Handing state a fix creates in the trainer to the helper function where the optimizer step runs
(``optimizer_tool.knowledge.helpers``): a new last keyword parameter ``name=None`` of the helper, so
that other callers keep working, and ``name=value`` at each of its call sites."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.templates import expression, with_keyword, with_param
from optimizer_tool.knowledge.helpers import HelperCall


def hand_over(edits: Edits, handed: HelperCall, name: str, value: str) -> None:
    """``def helper(..., name=None)`` and ``helper(..., name=value)`` at every call site."""
    step = handed.inside
    definition = edits.tree(step.path).function(step.node)
    edits.replace(step.path, definition, lambda node: with_param(node, name, cst.Name("None"), None))
    for site in handed.sites:
        argument = expression(edits.module(site.path), value)
        edits.replace(site.path, site.node, lambda node, a=argument: with_keyword(node, name, a))


def handover_patch(handed: HelperCall, name: str, value: str, inside: str, also: str = "") -> str:
    """The manual patch that hands ``value`` to the helper as ``name`` (and ``also``, a name the
    helper does not receive yet) and runs ``inside`` there."""
    helper = handed.helper.name
    extra = f", {also}=None" if also else ""
    passed = f", {also}={also}" if also else ""
    return (
        f"# pass it to the helper: def {helper}(..., {name}=None{extra}),\n"
        f"# called as {helper}(..., {name}={value}{passed})\n"
        f"# then in {helper}, right after {handed.inside.func_text}() (line {handed.inside.line}), in the same block:\n"
        f"if {name} is not None:\n" + "".join(f"    {line}\n" for line in inside.splitlines())
    )
