"""Rule discovery: every module of this package that sets ``KEY`` is one optimization."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

from optimizer_tool.rules.base import Fix, Rule


@dataclass(frozen=True)
class Optimization:
    key: str
    title: str
    module: ModuleType
    rules: tuple[type[Rule], ...]
    # Fixes that only add (EMA, warm-up, clipping, logging) are safe; those that change the
    # training objective need --unsafe or an explicit --only, as ruff does.
    safe_fix: bool
    fix: type[Fix] | None = None
    # Fixes too costly to run unasked (resolution: ~2x memory, +50% time) run only when named
    # in ``--only``, never as part of ``--all`` / ``--unsafe``.
    fix_on_request_only: bool = False


@lru_cache(maxsize=1)
def optimizations() -> tuple[Optimization, ...]:
    found: list[Optimization] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        key = getattr(module, "KEY", None)
        if key is None:
            continue
        rules = tuple(
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Rule) and "code" in vars(obj) and obj.__module__ == module.__name__
        )
        fixes = [obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, Fix) and obj is not Fix and obj.__module__ == module.__name__]
        fix = fixes[0] if fixes else None
        if fix is not None:
            fix.key = key
        for rule in rules:
            rule.key = key
            rule.fixable = fix is not None and rule.code in fix.codes
        found.append(Optimization(key, module.TITLE, module, tuple(sorted(rules, key=lambda r: r.code)), getattr(module, "SAFE_FIX", False), fix, getattr(module, "FIX_ON_REQUEST_ONLY", False)))
    order = {k: i for i, k in enumerate(KEY_ORDER)}
    return tuple(sorted(found, key=lambda o: order.get(o.key, len(order))))


# The order of the plan's checklist; unknown keys (new modules) come last.
KEY_ORDER = ("ema", "cosine", "offset", "zero-snr", "vpred", "lr-schedule", "lpips", "clipping", "resolution", "monitoring")


def all_rules() -> list[type[Rule]]:
    return [rule for opt in optimizations() for rule in opt.rules]


def rule_by_code(code: str) -> type[Rule] | None:
    return next((r for r in all_rules() if r.code.upper() == code.upper()), None)


def keys() -> list[str]:
    return [o.key for o in optimizations()]
