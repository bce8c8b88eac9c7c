"""Transitional re-exports: the content moved to ``optimizer_tool.edit`` and ``optimizer_tool.knowledge``."""

# ruff: noqa: F401
from __future__ import annotations

from optimizer_tool.edit.edits import (
    Edit,
    replace,
)
from optimizer_tool.edit.tree import (
    _FindAt,
    node_at,
    ancestors,
    enclosing,
)
from optimizer_tool.edit.templates import (
    value_like,
    keyword,
    with_keyword,
    without_comment,
    _separator,
    with_param,
    template_statements,
    template_expression,
    with_comment,
    string_literal,
    insert_dict_element,
)
from optimizer_tool.knowledge.settings import (
    string_constants,
    argparse_choices,
    feeds_diffusers_scheduler,
    spelling,
    _library,
)
from optimizer_tool.edit.settings import (
    SETTING_NODES,
    where,
    manual_setting_patch,
    set_settings,
    _setter,
    _kwarg,
)
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import change_settings
from optimizer_tool.edit.templates import parse_expression, parse_statements
from optimizer_tool.index import code_of


def expression(code, module):
    return parse_expression(module, code)


def statements(code, module):
    return parse_statements(module, code)


class UnitEdits(Edits):
    def add(self, path, node, edit):
        self.replace(path, node, edit)

    def settings(self, changes):
        return change_settings(self, changes)
