"""The one edit accumulator of the fixes: every change a fix makes to a unit is collected
against the original nodes (by identity: ``CallSite.node`` is a node of the module the fix
receives, so an anchor found through the index is proven, not guessed from text) and applied at
the end in one libcst pass per file, which then adds the imports the new code needs
(``AddImportsVisitor``, idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping, Union

import libcst as cst
import libcst.matchers as m
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor

from optimizer_tool.contract import FixContext
from optimizer_tool.edit.tree import Tree
from optimizer_tool.index import (
    CallSite,
)

Replacement = Union[cst.CSTNode, Callable[[cst.CSTNode], cst.CSTNode]]
Edit = Callable[[cst.CSTNode], cst.CSTNode]


class _FileEdits:
    def __init__(self, module: cst.Module, owners: Callable[[], Mapping] | None = None) -> None:
        self.module = module
        self._owners = owners  # which top-level statement holds a node the index knows
        self._tree: Tree | None = None
        self.before: dict[cst.CSTNode, list[cst.BaseStatement]] = {}
        self.after: dict[cst.CSTNode, list[cst.BaseStatement]] = {}
        self.removed: set[cst.CSTNode] = set()
        self.replaced: dict[cst.CSTNode, Replacement] = {}
        self.imports: list[tuple[str, str | None, int]] = []

    @property
    def tree(self) -> Tree:
        """Parent links, built on first use (a fix that only replaces nodes never needs them)."""
        if self._tree is None:
            self._tree = Tree(self.module, self._owners)
        return self._tree

    @property
    def empty(self) -> bool:
        return not (self.before or self.after or self.removed or self.replaced or self.imports)

    def transformed(self, strict: bool = False) -> cst.Module:
        """The module with every edit applied in one pass. ``strict``: every edited node must be one
        of its own (a fix may also queue edits for nodes a branch it did not take would have used)."""
        transformer = _Apply(self, self._on_the_way() if self._tree is not None else None)
        updated = self.module.visit(transformer)
        missing = len(set(self.replaced) | self.removed | set(self.before) | set(self.after)) - len(transformer.done)
        if strict and missing:
            raise RuntimeError(f"{missing} node(s) to edit are not in the module: it changed after it was indexed")
        return updated

    def _on_the_way(self) -> set[cst.CSTNode]:
        """The edited nodes and every node above them: the only ones the transformer must enter
        (a fix touching three statements of a 50,000-line file walks three paths, not the file)."""
        found: set[cst.CSTNode] = set()
        for node in (*self.replaced, *self.removed, *self.before, *self.after):
            while node is not None and node not in found:
                found.add(node)
                node = self.tree.parent.get(node)
        return found


class _Apply(cst.CSTTransformer):
    """The one transformer: replacements, removals and insertions keyed by original node. Given
    ``enter``, it skips the subtrees that hold no edited node."""

    def __init__(self, edits: _FileEdits, enter: set[cst.CSTNode] | None = None) -> None:
        super().__init__()
        self.edits = edits
        self.enter = enter
        self.done: set[int] = set()

    def on_visit(self, node) -> bool:
        return self.enter is None or node in self.enter

    def on_leave(self, original_node, updated_node):
        e = self.edits
        touched = False
        if original_node in e.replaced:
            replacement = e.replaced[original_node]
            updated_node = replacement(updated_node) if callable(replacement) else replacement
            touched = True
        before, after = e.before.get(original_node, []), e.after.get(original_node, [])
        if touched or before or after or original_node in e.removed:
            self.done.add(id(original_node))
        if original_node in e.removed:
            return cst.FlattenSentinel([*before, *after]) if before or after else cst.RemoveFromParent()
        if before or after:
            return cst.FlattenSentinel([*before, updated_node, *after])
        return updated_node


def replace(module: cst.Module, edits: dict[cst.CSTNode, Edit]) -> cst.Module:
    """Apply ``edits`` (original node -> function of its updated version) to ``module`` in one
    pass; every node must belong to ``module`` as the index saw it."""
    file = _FileEdits(module)
    file.replaced.update(edits)
    return file.transformed(strict=True)


class Edits:
    """All changes one fix makes to a unit, applied at the end in one pass per file."""

    def __init__(self, ctx: FixContext) -> None:
        self.ctx = ctx
        self._files: dict[Path, _FileEdits] = {}

    def file(self, path: Path) -> _FileEdits:
        if path not in self._files:
            self._files[path] = _FileEdits(self.ctx.module(path), lambda: self.ctx.index.owners(path))
        return self._files[path]

    def tree(self, path: Path) -> Tree:
        return self.file(path).tree

    def module(self, path: Path) -> cst.Module:
        return self.file(path).module

    def statement_of(self, call: CallSite) -> cst.BaseStatement:
        return self.tree(call.path).statement(call.node)

    def insert_before(self, path: Path, anchor: cst.BaseStatement, new: Iterable[cst.BaseStatement]) -> None:
        self.file(path).before.setdefault(anchor, []).extend(new)

    def insert_after(self, path: Path, anchor: cst.BaseStatement, new: Iterable[cst.BaseStatement]) -> None:
        self.file(path).after.setdefault(anchor, []).extend(new)

    def remove(self, path: Path, node: cst.BaseStatement) -> None:
        self.file(path).removed.add(node)

    def move_after(self, path: Path, moved: cst.BaseStatement, anchor: cst.BaseStatement) -> None:
        self.insert_after(path, anchor, [self.detach(path, moved)])

    def move_before(self, path: Path, moved: cst.BaseStatement, anchor: cst.BaseStatement) -> None:
        self.insert_before(path, anchor, [self.detach(path, moved)])

    def detach(self, path: Path, moved: cst.BaseStatement) -> cst.BaseStatement:
        """Remove ``moved`` from its place and return it for insertion elsewhere: the comment lines
        right above it travel with it, blank lines stay where they were (on the next statement)."""
        self.remove(path, moved)
        lines = list(moved.leading_lines)
        cut = len(lines)
        while cut and lines[cut - 1].comment is not None:
            cut -= 1
        stay, keep = lines[:cut], lines[cut:]
        siblings = list(self.tree(path).block(moved).body)
        following = siblings[siblings.index(moved) + 1 :]
        if stay and following:
            self.replace(path, following[0], lambda node: node.with_changes(leading_lines=[*stay, *node.leading_lines]))
        return moved.with_changes(leading_lines=keep)

    def replace(self, path: Path, node: cst.CSTNode, replacement: Replacement) -> None:
        """Replace ``node`` (an original node) by a node, or by ``fn(updated_node)``; replacements
        of one node compose in the order they were asked for."""
        edits = self.file(path)
        earlier = edits.replaced.get(node)
        if earlier is None:
            edits.replaced[node] = replacement
            return
        first = earlier if callable(earlier) else (lambda _n, e=earlier: e)
        second = replacement if callable(replacement) else (lambda _n, r=replacement: r)
        edits.replaced[node] = lambda updated: second(first(updated))

    def first_time(self, key) -> bool:
        """True only the first time a fix asks for ``key`` (a helper inserted once per file)."""
        seen = self.__dict__.setdefault("_once", set())
        if key in seen:
            return False
        seen.add(key)
        return True

    def add_import(self, path: Path, module: str, obj: str | None = None, relative: int = 0) -> None:
        """``import module`` / ``from module import obj``; ``relative`` dots for a package-relative import."""
        self.file(path).imports.append((module, obj, relative))

    def apply(self) -> None:
        for path, edits in self._files.items():
            if edits.empty:
                continue
            module = edits.transformed()
            if edits.imports:
                module = _add_imports(module, edits.imports)
            self.ctx.update(path, module)


def _add_imports(module: cst.Module, imports: list[tuple[str, str | None, int]]) -> cst.Module:
    """libcst's ``AddImportsVisitor`` on the head of the module only: it reads and changes nothing
    but the leading docstring, the import block under it and the first statement after (which may
    get an empty line), and run on a whole 50,000-line module it copies and walks every node."""
    body = module.body
    start = 1 if body and _docstring_or_strict(body[0]) else 0
    end = start
    while end < len(body) and m.matches(body[end], m.SimpleStatementLine(body=[m.Import() | m.ImportFrom()])):
        end += 1
    head = module.with_changes(body=body[: end + 1])
    context = CodemodContext()
    for name, obj, relative in imports:
        AddImportsVisitor.add_needed_import(context, name, obj, relative=relative)
    done = AddImportsVisitor(context).transform_module(head)
    return module.with_changes(header=done.header, body=(*done.body, *body[end + 1 :]))


def _docstring_or_strict(statement: cst.BaseStatement) -> bool:
    return m.matches(
        statement,
        m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])
        | m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("__strict__"))])]),
    )
