"""The package's imports run one way. Each module belongs to one layer; it may import modules of
lower layers and modules of its own component (``knowledge.diffusion`` -> ``knowledge.configured``),
never a higher layer or another component of its own layer. A rule module or package never
imports another optimization's module: shared facts live in ``optimizer_tool.knowledge``.

Deferred imports inside functions count too: a cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "optimizer_tool"

# Lowest first. A component is a module or a package (all its submodules).
LAYERS: list[tuple[str, ...]] = [
    (
        "optimizer_tool",
        "optimizer_tool.findings",
        "optimizer_tool.errors",
        "optimizer_tool.deep",
        "optimizer_tool.syntax",
    ),
    ("optimizer_tool.project", "optimizer_tool.settings", "optimizer_tool.transaction"),
    ("optimizer_tool.config_choice",),
    ("optimizer_tool.index",),
    ("optimizer_tool.contract", "optimizer_tool.knowledge"),
    ("optimizer_tool.edit",),
    ("optimizer_tool.rules",),
    ("optimizer_tool.registry",),
    ("optimizer_tool.verdicts",),
    ("optimizer_tool.engine",),
    ("optimizer_tool.verify",),
    ("optimizer_tool.apply", "optimizer_tool.reporters", "optimizer_tool.smoke", "optimizer_tool.ablate"),
    ("optimizer_tool.cli", "optimizer_tool.testing"),
    ("optimizer_tool.quick_optimizations",),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(name: str, source: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported optimizer_tool module) for every import statement of module ``name``."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if _is_module(target) else base))
    return [(line, target) for line, target in found if target.split(".")[0] == "optimizer_tool"]


def _component(module: str) -> tuple[int, str] | None:
    """(layer, component) of a module: the longest component name that is it or holds it."""
    best = None
    for layer, components in enumerate(LAYERS):
        for component in components:
            inside = module.startswith(component + ".") and component != "optimizer_tool"
            if module == component or inside:
                if best is None or len(component) > len(best[1]):
                    best = (layer, component)
    return best


def _rule_owner(module: str) -> str | None:
    """``optimizer_tool.rules.ema.fix.add`` -> ``optimizer_tool.rules.ema`` (None outside rules)."""
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[:2] == ["optimizer_tool", "rules"] and len(parts) > 2 else None


def module_violations(here: str, source: str, label: str, is_package: bool = False) -> list[str]:
    mine = _component(here)
    if mine is None:
        return [f"{here}: belongs to no layer (add it to LAYERS in {Path(__file__).name})"]
    found = []
    for line, target in _imports(here, source, is_package):
        theirs = _component(target)
        where = f"{label}:{line}"
        if theirs is None:
            found.append(f"{where}: imports {target}, which belongs to no layer")
        elif theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] not in (mine[1], "optimizer_tool")):
            found.append(f"{where}: {here} (layer {mine[0]}) imports {target} (layer {theirs[0]}, {theirs[1]})")
        elif _rule_owner(here) and _rule_owner(target) and _rule_owner(here) != _rule_owner(target):
            found.append(f"{where}: rule module {here} imports another optimization's module {target}")
    return found


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        label = str(path.relative_to(PACKAGE.parent))
        source = path.read_text(encoding="utf-8")
        found += module_violations(_module_name(path), source, label, path.name == "__init__.py")
    return list(dict.fromkeys(found))


def test_imports_run_one_way():
    assert violations() == []


@pytest.mark.parametrize(
    "module,source,expected",
    [
        ("optimizer_tool.rules.probe", "from optimizer_tool.cli.common import fail\n", "optimizer_tool.cli)"),
        ("optimizer_tool.rules.probe.fix", "from optimizer_tool.rules.ema import KEY\n", "another optimization"),
        (
            "optimizer_tool.knowledge.probe",
            "from optimizer_tool.contract import Fix\n",
            "(layer 4, optimizer_tool.contract)",
        ),
        ("optimizer_tool.edit.probe", "def f():\n    from ..registry import keys\n", "probe.py:2: optimizer_tool.edit"),
        ("optimizer_tool.probe", "import os\n", "belongs to no layer"),
    ],
)
def test_a_wrong_import_is_reported(module, source, expected):
    """The checker itself: an upward import (also deferred and relative), a rule->rule import, a
    same-layer import between two components, a module outside every layer."""
    reported = module_violations(module, source, "probe.py")
    assert len(reported) == 1 and expected in reported[0], reported


def test_a_right_import_is_not_reported():
    source = "from optimizer_tool.knowledge.training import trains\nfrom . import sibling\n"
    assert module_violations("optimizer_tool.rules.probe.fix", source, "probe.py") == []
