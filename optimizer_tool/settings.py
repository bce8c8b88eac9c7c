"""``[tool.t2s-opt]`` in the target project's pyproject.toml, merged with the command line.

```toml
[tool.t2s-opt]
require = ["ema", "cosine", "lr-schedule"]   # other optimizations' "missing" findings become info
ignore = ["LPIPS001"]                          # codes or prefixes
select = ["EMA", "CLIP"]                       # codes or prefixes (default: all)
fail-on = "missing"                            # bug | missing | info, or a list adding "unknown"

[[tool.t2s-opt.per-path]]
path = "legacy/*.py"
ignore = ["EMA"]
```
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from pathlib import Path

import tomllib

from optimizer_tool.errors import UsageError
from optimizer_tool.findings import Finding, Severity


@dataclass(frozen=True)
class PerPath:
    pattern: str
    ignore: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    require: tuple[str, ...] | None = None  # None: every optimization is required
    fail_on: Severity = Severity.MISSING
    fail_on_unknown: bool = False  # --fail-on unknown: a CI gate that demands full understanding
    per_path: tuple[PerPath, ...] = ()
    source: Path | None = None

    def wants(self, finding: Finding, root: Path) -> bool:
        code = finding.code.upper()
        if finding.is_error:
            return True
        if finding.key != "meta" and not self.selects_key(finding.key):
            return False
        if not self.selects_code(code):
            return False
        ignored = list(self.ignore)
        rel = _relative(finding.location.path, root)
        for entry in self.per_path:
            if fnmatch.fnmatch(rel, entry.pattern):
                ignored.extend(entry.ignore)
        return not any(code.startswith(p.upper()) for p in ignored)

    def adjust(self, finding: Finding) -> Finding:
        """Missing optimizations the project does not require are only information."""
        if self.require is not None and finding.severity is Severity.MISSING and finding.key not in self.require:
            return replace(finding, severity=Severity.INFO)
        return finding

    def fails(self, finding: Finding) -> bool:
        return finding.is_error or finding.severity.rank <= self.fail_on.rank

    def selects_code(self, code: str) -> bool:
        """``--select`` names the code (or a prefix of it), or selects nothing."""
        return not self.select or any(code.upper().startswith(p.upper()) for p in self.select)

    def selects_key(self, key: str) -> bool:
        return (not self.only or key in self.only) and key not in self.skip

    def fails_unknown(self, key: str) -> bool:
        """An unknown verdict fails with ``--fail-on unknown``, and for every key ``require`` names."""
        return self.fail_on_unknown or (self.require is not None and key in self.require)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _strings(table: dict, name: str, source: Path) -> tuple[str, ...]:
    value = table.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{source}: [tool.t2s-opt] {name} must be a list of strings")
    return tuple(value)


def load_settings(root: Path, known_keys: list[str]) -> Settings:
    path = root / "pyproject.toml"
    if not path.exists():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read [tool.t2s-opt]: {exc}") from exc
    table = data.get("tool", {}).get("t2s-opt")
    if table is None:
        return Settings()
    allowed = {"require", "ignore", "select", "fail-on", "per-path"}
    unknown = set(table) - allowed
    if unknown:
        raise UsageError(
            f"{path}: unknown key(s) in [tool.t2s-opt]: {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    require = _strings(table, "require", path) if "require" in table else None
    if require is not None:
        bad = [k for k in require if k not in known_keys]
        if bad:
            raise UsageError(
                f"{path}: [tool.t2s-opt] require names unknown optimization(s) {bad}; known: {', '.join(known_keys)}"
            )
    per_path = []
    for entry in table.get("per-path", []):
        if not isinstance(entry, dict) or "path" not in entry:
            raise UsageError(f"{path}: each [[tool.t2s-opt.per-path]] needs a 'path' glob")
        per_path.append(PerPath(entry["path"], _strings(entry, "ignore", path)))
    fail_on = table.get("fail-on", Severity.MISSING.value)
    values = [fail_on] if isinstance(fail_on, str) else fail_on if isinstance(fail_on, list) else [repr(fail_on)]
    severity, unknown = parse_fail_on(values, f"{path}: [tool.t2s-opt] fail-on")
    return Settings(
        select=_strings(table, "select", path),
        ignore=_strings(table, "ignore", path),
        require=require,
        fail_on=severity or Severity.MISSING,
        fail_on_unknown=unknown,
        per_path=tuple(per_path),
        source=path,
    )


def merge(base: Settings, **cli) -> Settings:
    """Command-line values win; list options add to the file's."""
    changes = {}
    for name in ("select", "only", "skip"):
        if cli.get(name):
            changes[name] = tuple(cli[name])
    if cli.get("ignore"):
        changes["ignore"] = base.ignore + tuple(cli["ignore"])
    if cli.get("fail_on") is not None:
        changes["fail_on"] = cli["fail_on"]
    if cli.get("fail_on_unknown"):
        changes["fail_on_unknown"] = True
    return replace(base, **changes)


def parse_fail_on(values: list[str], where: str) -> tuple[Severity | None, bool]:
    """``["missing", "unknown"]`` -> (the lowest failing severity, whether unknown verdicts fail)."""
    severity, unknown = None, False
    for value in values:
        if value == "unknown":
            unknown = True
            continue
        try:
            severity = Severity(value)
        except ValueError as exc:
            raise UsageError(f"{where} must be bug, missing, info and/or unknown (got {value!r})") from exc
    return severity, unknown
