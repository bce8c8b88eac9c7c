"""Which transformers the target project runs, read from the project and never from this machine:
the fix writes ``get_cosine_with_min_lr_schedule_with_warmup`` only where the project's own
requirements (or, with none, its own imports) say that helper exists.

The rule, in order:

1. The project declares transformers (``requirements*.txt``, ``pyproject.toml``, ``setup.cfg``,
   ``setup.py``, ``environment.yml`` in the trainer's folder or a folder above it, up to the project
   root): the helper is used when every version the declaration admits has it (a floor ``>=``,
   ``==``, ``~=``, ``^`` of 4.40 or later, and no cap below 4.40), or when the declaration gives no
   floor (``transformers``, ``transformers<5``: the newest release installs). A floor below 4.40
   (``transformers>=4.25.1``, diffusers' examples) promises to work on a version without it.
2. Nothing declares transformers, but the unit's code imports it: an unpinned dependency, the newest
   release installs; the helper is used.
3. Neither: transformers is not a dependency of the project, and adding one is not this fix's call.
   The floored cosine is written with torch's schedulers (``SequentialLR`` of ``LinearLR`` and
   ``CosineAnnealingLR(eta_min=...)``), which every supported torch has.

diffusers' version does not matter: the fix keeps ``get_scheduler`` calls as they are.
"""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

import tomllib

from optimizer_tool.index import UnitIndex

HELPER_SINCE = (4, 40)  # huggingface/transformers#29341, merged 2024-03-26 after v4.39.0: first in v4.40.0
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;.*)?$")
CLAUSE = re.compile(r"^\s*(===|==|~=|>=|<=|!=|>|<|\^|~|=)?\s*v?(\d+(?:\.\d+)*)")
FLOOR_OPERATORS = {"===", "==", "~=", ">=", ">", "^", "~", "="}


def has_min_lr_helper(index: UnitIndex) -> bool:
    """Whether the fix may write transformers' ``get_cosine_with_min_lr_schedule_with_warmup``."""
    clauses = declared(index.unit.manifests, "transformers")
    if clauses is None:
        return imports(index, "transformers")
    return admits_only_newer(clauses, HELPER_SINCE)


def imports(index: UnitIndex, package: str) -> bool:
    """The unit's code imports ``package`` (``import x``, ``import x.y``, ``from x.y import z``)."""
    for source in index.files:
        for node in ast.walk(source.tree) if source.tree else ():
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(name == package or name.startswith(package + ".") for name in names):
                return True
    return False


def declared(manifests: dict[Path, str], package: str) -> list[str] | None:
    """The version clauses the manifests give ``package`` (``[">=4.40", "<5"]``; ``[]`` for a bare
    requirement), None when none of them names it."""
    wanted = _canonical(package)
    found: list[str] | None = None
    for path, text in manifests.items():
        for requirement in _requirements(path, text):
            match = REQUIREMENT.match(requirement)
            if match and _canonical(match.group(1)) == wanted:
                found = (found or []) + [c for c in match.group(2).strip("() ").split(",") if c.strip()]
    return found


def admits_only_newer(clauses: list[str], since: tuple[int, ...]) -> bool:
    """True when the clauses admit no version older than ``since``, or set no floor at all."""
    floor: tuple[int, ...] | None = None
    for clause in clauses:
        match = CLAUSE.match(clause)
        if match is None:
            continue  # a URL, a wildcard-only pin...: says nothing about the version
        operator, version = match.group(1) or "==", _release(match.group(2))
        if operator in FLOOR_OPERATORS:
            floor = version if floor is None else max(floor, version)
        if (operator == "<" and version <= since) or (operator in ("<=", "==", "===", "=") and version < since):
            return False
    return floor is None or floor >= since


def _release(text: str) -> tuple[int, ...]:
    """``4.40.0`` -> (4, 40): the release numbers without trailing zeros."""
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path, text: str) -> list[str]:
    """Requirement strings in pip's syntax from one manifest; an unreadable manifest gives none."""
    try:
        if path.name == "pyproject.toml":
            return _pyproject(tomllib.loads(text))
        if path.name == "setup.cfg":
            return _setup_cfg(text)
        if path.name == "setup.py":
            return _setup_py(ast.parse(text))
        if path.suffix in (".yml", ".yaml"):
            return _environment(text)
    except Exception:  # noqa: BLE001 - a broken manifest says nothing about versions
        return []
    lines = (re.split(r"(^|\s)#", line)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("-") and "://" not in line]


def _pyproject(data: dict) -> list[str]:
    project = data.get("project", {})
    found = [*project.get("dependencies", [])]
    for group in [*project.get("optional-dependencies", {}).values(), *data.get("dependency-groups", {}).values()]:
        found += [r for r in group if isinstance(r, str)]
    poetry = data.get("tool", {}).get("poetry", {})
    tables = [poetry.get("dependencies", {}), poetry.get("dev-dependencies", {})]
    tables += [g.get("dependencies", {}) for g in poetry.get("group", {}).values()]
    for table in tables:
        for name, spec in table.items():
            spec = spec.get("version", "") if isinstance(spec, dict) else spec
            if isinstance(spec, str):
                found.append(name + ("" if spec.strip() == "*" else _poetry(spec)))
    return [r for r in found if isinstance(r, str)]


def _poetry(spec: str) -> str:
    """Poetry's ``^4.40`` / ``~4.40`` / ``4.40.1`` as pip clauses (only the floor matters here)."""
    spec = spec.strip()
    if spec[:1] in ("^", "~") and spec[1:2] != "=":
        return ">=" + spec[1:]
    return spec if spec[:1] in "<>=!~" else "==" + spec


def _setup_cfg(text: str) -> list[str]:
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(text)
    values = [parser.get("options", "install_requires", fallback="")]
    if parser.has_section("options.extras_require"):
        values += [value for _, value in parser.items("options.extras_require")]
    return [line.strip() for value in values for line in value.splitlines() if line.strip()]


def _setup_py(tree: ast.AST) -> list[str]:
    """String elements of the lists and tuples of setup.py (``install_requires=[...]``, ``REQUIRED = (...)``)."""
    return [
        element.value
        for node in ast.walk(tree)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set))
        for element in node.elts
        if isinstance(element, ast.Constant) and isinstance(element.value, str)
    ]


def _environment(text: str) -> list[str]:
    """conda's ``transformers=4.40`` / ``conda-forge::transformers>=4.40`` and the ``pip:`` list."""
    import yaml

    data = yaml.safe_load(text)
    found: list[str] = []
    for item in data.get("dependencies", []) if isinstance(data, dict) else []:
        if isinstance(item, dict):
            found += [r for r in item.get("pip", []) if isinstance(r, str)]
        elif isinstance(item, str):
            spec = item.split("::")[-1].strip()
            found.append(re.sub(r"^([A-Za-z0-9._-]+)\s*=?\s*(?=\d)", r"\1==", spec))
    return found
