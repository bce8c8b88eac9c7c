"""Printing and reading source text cheaply on large files: a top-level statement's code is printed
once per statement node (a fix changes a few statements of a file; libcst keeps the others, and
their text), and lines are numbered as Python numbers them."""

from __future__ import annotations

import re
from collections import OrderedDict

import libcst as cst


def source_lines(text: str) -> list[str]:
    """A file's lines as Python numbers them (``str.splitlines`` also splits at form feeds)."""
    return NEWLINE.split(text)


NEWLINE = re.compile(r"\r\n?|\n")


def statement_code(module: cst.Module, statement: cst.CSTNode) -> str:
    """A top-level statement's code as ``module`` prints it, printed once per statement (a fix
    changes a few statements of a file; the others keep their nodes and their text)."""
    key = (id(statement), module.default_indent, module.default_newline)
    found = _CODES.get(key)
    if found is None or found[0] is not statement:
        found = _CODES[key] = (statement, module.code_for_node(statement))
        while len(_CODES) > _LINKED_CODES:
            _CODES.popitem(last=False)
    return found[1]


def remember_code(module: cst.Module, statement: cst.CSTNode, code: str) -> None:
    """``statement_code`` of a statement already printed with ``module``'s indent and newline (the
    index prints every statement once for its positions)."""
    _CODES[(id(statement), module.default_indent, module.default_newline)] = (statement, code)
    while len(_CODES) > _LINKED_CODES:
        _CODES.popitem(last=False)


def module_code(module: cst.Module) -> str:
    """``module.code``, from the statements' cached texts."""
    if not module.has_trailing_newline or not module.body:
        return module.code
    parts = [*(module.code_for_node(line) for line in module.header)]
    parts += [statement_code(module, statement) for statement in module.body]
    parts += [module.code_for_node(line) for line in module.footer]
    return "".join(parts)


_CODES: OrderedDict[tuple[int, str, str], tuple[cst.CSTNode, str]] = OrderedDict()
_LINKED_CODES = 100_000
