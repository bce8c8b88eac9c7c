"""What a check produces: findings with a stable code, a severity and a location."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Severity(str, enum.Enum):
    """Ordered from most to least serious; ``--fail-on`` compares with this order."""

    BUG = "bug"
    MISSING = "missing"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"bug": 0, "missing": 1, "info": 2}[self.value]


@dataclass(frozen=True)
class Location:
    path: Path
    line: int
    col: int  # 1-based, as editors show it

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Finding:
    code: str
    key: str
    severity: Severity
    message: str
    location: Location
    fixable: bool = False
    # Filled for problems of the input itself (syntax errors, unreadable files).
    is_error: bool = False
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def sort_key(self) -> tuple:
        return (str(self.location.path), self.location.line, self.location.col, self.code)

    def concise(self, root: Path | None = None) -> str:
        path = self.location.path
        if root is not None:
            try:
                path = path.resolve().relative_to(root.resolve())
            except ValueError:
                pass
        return f"{path}:{self.location.line}:{self.location.col} {self.code} {self.message}"


class State(str, enum.Enum):
    """What ``check`` knows about one optimization in one unit."""

    PRESENT = "present"  # on when the trainer runs with its defaults
    MISSING = "missing"  # absent
    OFF = "off-by-default"  # the code exists behind a flag or field whose default disables it
    ELSEWHERE = "decided-elsewhere"  # passed in by a caller or a config this unit does not fix
    UNKNOWN = "unknown"  # the rules could not see enough to say
    NOT_APPLICABLE = "n/a"  # the optimization does not apply (a diffusion check on a classifier)


@dataclass(frozen=True)
class Verdict:
    """One optimization in one unit: its state, why (what was found or not found), and where."""

    key: str
    state: State
    reason: str = ""
    location: Location | None = None
