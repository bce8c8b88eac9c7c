"""The index, the parent links and the re-check of a fix reuse what a fix did not touch (issue 14,
item 10: apply on a large file within 2x of check). Reuse must never change an answer: the facts of
a changed module equal the facts of its printed text parsed from scratch."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest

from optimizer_tool import index as index_module
from optimizer_tool.edit.tree import Tree
from optimizer_tool.index import FileFacts, reparsed
from optimizer_tool.project import SourceFile

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trainers"
TRAINERS = sorted(p for p in FIXTURES.rglob("*.py") if p.stat().st_size > 1500)


def _summary(facts: FileFacts) -> dict[str, list]:
    """Everything rules read from the facts, by value (nodes by their code)."""

    def fn(info):
        return None if info is None else (info.name, info.class_name, info.line, info.end_line, info.params)

    return {
        "calls": [
            (c.line, c.col, c.func_text, sorted(c.qualnames), fn(c.function), c.guards, c.loops, c.branches, c.no_grad)
            for c in facts.calls
        ],
        "assigns": [
            (a.line, a.col, a.target, fn(a.function), a.call.line if a.call else None, a.guards, a.position)
            for a in facts.assigns
        ],
        "settings": [(s.name, repr(s.value), s.kind, s.line, s.col, s.owner) for s in facts.settings],
        "functions": [fn(f) for f in facts.functions],
        "items": [(i.line, i.col, i.container, repr(i.key), fn(i.function)) for i in facts.item_assigns],
        "returns": [(r.line, r.col, fn(r.function)) for r in facts.returns],
        "by_node": sorted((site.line, site.col) for site in facts.call_by_node.values()),
    }


def _fresh(path: Path, text: str) -> FileFacts:
    index_module._RECENT.clear()  # nothing to reuse: every statement walked
    return FileFacts.of(SourceFile(path, text))


def _insert_after_first_import(module: cst.Module) -> cst.Module:
    """What a fix does to a module: new statements and a new import, the rest kept by identity."""
    body = list(module.body)
    new = cst.parse_module("import copy\nema_decay = 0.999\nwarmup_steps = min(500, 10)\n\n\n").body
    at = next((i + 1 for i, s in enumerate(body) if "import" in module.code_for_node(s)), 0)
    return module.with_changes(body=[*body[:at], *new, *body[at:]])


@pytest.mark.parametrize("path", TRAINERS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_facts_of_a_changed_module_equal_facts_parsed_from_scratch(path):
    original = SourceFile(path, path.read_text())
    FileFacts.of(original)
    changed = _insert_after_first_import(original.module)
    text = changed.code
    reused = FileFacts.of(SourceFile(path, text, changed))
    kept = [s for s in changed.body if s in original.facts.pieces]
    assert kept and all(reused.pieces[s].facts is not None for s in kept)
    assert _summary(reused) == _summary(_fresh(path, text))


def test_a_new_import_requalifies_the_statements_that_use_the_name():
    path = Path("train.py")
    text = "import torch\nopt = optim.AdamW(params)\nfor x in data:\n    opt.step()\n"
    original = SourceFile(path, text)
    before = FileFacts.of(original)
    assert before.calls[0].qualnames == frozenset()  # ``optim`` is not imported yet
    module = original.module.with_changes(
        body=[cst.parse_statement("from torch import optim\n"), *original.module.body]
    )
    after = FileFacts.of(SourceFile(path, module.code, module))
    adamw = next(c for c in after.calls if c.func_text == "optim.AdamW")
    assert adamw.qualnames == {"torch.optim.AdamW"} and adamw.line == 3
    assert _summary(after) == _summary(_fresh(path, module.code))


def test_a_statement_a_fix_built_is_read_as_its_printed_code_parses():
    """A tree built by a transformation can print as code that parses differently: ``a * (b + c)``
    built without parentheses prints as ``a * b + c``. The re-check reads what the file will say."""
    original = cst.parse_module("import torch\nx = 1\n\n\ndef f():\n    return 2\n")
    wrong = cst.SimpleStatementLine(
        [
            cst.Assign(
                [cst.AssignTarget(cst.Name("y"))],
                cst.BinaryOperation(
                    cst.Name("a"), cst.Multiply(), cst.BinaryOperation(cst.Name("b"), cst.Add(), cst.Name("c"))
                ),
            )
        ]
    )
    fixed = original.with_changes(body=[*original.body[:2], wrong, *original.body[2:]])
    module = reparsed(fixed, original)
    assert module is not None and module.code == fixed.code
    assert module.body[0] is original.body[0] and module.body[3] is original.body[2]  # kept: their facts reused
    value = module.body[2].body[0].value
    assert isinstance(value.left, cst.BinaryOperation)  # (a * b) + c, as Python reads the line


def test_lazy_parent_links_answer_as_a_full_walk_does():
    path = next(p for p in TRAINERS if "openai" in str(p))
    module = cst.parse_module(path.read_text())
    facts = FileFacts.of(SourceFile(path, path.read_text(), module))
    owners = {}
    for statement, piece in facts.pieces.items():
        owners.update(dict.fromkeys(piece.facts.call_by_node, statement))
    lazy, full = Tree(module, lambda: owners), Tree(module)
    for call in facts.calls:
        assert lazy.statement(call.node) is full.statement(call.node)
        assert lazy.function(call.node) is full.function(call.node)
    assert list(lazy.parent) == list(full.parent)  # every node, in document order
    assert module not in lazy.parent and cst.Name("elsewhere") not in lazy.parent
