"""Every fix's before/after pairs (TorchFix ``x.in.py``/``x.out.py`` style), run through the real
apply engine, and each one applied again to its own output (idempotence).

A case lives under ``tests/apply/cases/<key>/`` (``<key>`` is the optimization that ``--only``
selects) in one of two shapes:

- ``<name>.in.py`` + ``<name>.out.py``: a single-file trainer (checked as ``train.py``);
- ``<name>/in/`` + ``<name>/out/``: a small project; ``out/`` holds the files the fix changes,
  a file of ``in/`` missing from ``out/`` must stay as it is.

A case whose fix must refuse has ``<name>/refused.txt`` (a phrase the CannotFix message contains)
instead of ``out/``: nothing may change.

Regenerate the expected outputs after an intended change with
``T2S_UPDATE_EXPECTED=1 pytest tests/apply/test_fix_cases.py`` and review the diff.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from optimizer_tool.apply import plan, select
from optimizer_tool.settings import Settings

CASES_DIR = Path(__file__).resolve().parent / "cases"


@dataclass(frozen=True)
class Case:
    key: str
    name: str
    inputs: dict[str, str]  # relative path -> source
    expected: dict[str, str] | None  # relative path -> source of the changed files; None: must refuse
    refusal: str = ""
    out_dir: Path | None = None

    @property
    def id(self) -> str:
        return f"{self.key}/{self.name}"


def _read_tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def discover() -> list[Case]:
    cases = []
    for key_dir in sorted(p for p in CASES_DIR.iterdir() if p.is_dir()) if CASES_DIR.exists() else []:
        key = key_dir.name
        for before in sorted(key_dir.glob("*.in.py")):
            name = before.name[: -len(".in.py")]
            after = key_dir / f"{name}.out.py"
            expected = {"train.py": after.read_text(encoding="utf-8")} if after.exists() else {}
            cases.append(Case(key, name, {"train.py": before.read_text(encoding="utf-8")}, expected, out_dir=key_dir))
        for folder in sorted(p for p in key_dir.iterdir() if (p / "in").is_dir()):
            refused = folder / "refused.txt"
            if refused.exists():
                cases.append(Case(key, folder.name, _read_tree(folder / "in"), None, refused.read_text(encoding="utf-8").strip()))
            else:
                out = folder / "out"
                cases.append(Case(key, folder.name, _read_tree(folder / "in"), _read_tree(out) if out.is_dir() else {}, out_dir=out))
    return cases


CASES = discover()


def _write(files: dict[str, str], folder: Path) -> Path:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def _changed(folder: Path, key: str):
    result = plan([folder], select([key], None, unsafe=False), Settings())
    root = folder.resolve()
    return result, {p.relative_to(root).as_posix(): text for p, text in result.changed.items()}


def _update_expected(case: Case, changed: dict[str, str]) -> None:
    """Write what the fix produced as the case's expected output (T2S_UPDATE_EXPECTED=1)."""
    if case.out_dir is None:
        return
    if case.out_dir.name == "out":
        for rel, text in changed.items():
            _write({rel: text}, case.out_dir)
    elif "train.py" in changed:
        (case.out_dir / f"{case.name}.out.py").write_text(changed["train.py"], encoding="utf-8")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fix_turns_in_into_out(case: Case, tmp_path):
    result, changed = _changed(_write(case.inputs, tmp_path / "in"), case.key)
    if case.expected is None:
        assert result.refused, f"the {case.key} fix should refuse this input, it changed {sorted(changed)}"
        assert any(case.refusal in exc.message for exc in result.refused), [exc.message for exc in result.refused]
        assert all(exc.patch.strip() for exc in result.refused), "a refusal must suggest a manual patch"
        return
    assert not result.refused, [str(exc) for exc in result.refused]
    if os.environ.get("T2S_UPDATE_EXPECTED"):
        _update_expected(case, changed)
        return
    assert changed, f"the {case.key} fix changed nothing"
    assert result.ok, f"re-check failed: unfixed {result.unfixed}, new {result.blocking}"
    for rel, text in changed.items():
        assert rel in case.expected, f"{rel} changed but the case has no expected output for it"
        assert text == case.expected[rel], f"{rel} differs from the expected output"
    for rel in case.expected:
        assert rel in changed, f"{rel} was expected to change but did not"


@pytest.mark.parametrize("case", [c for c in CASES if c.expected], ids=[c.id for c in CASES if c.expected])
def test_fix_applied_twice_changes_nothing(case: Case, tmp_path):
    after = {**case.inputs, **case.expected}
    result, changed = _changed(_write(after, tmp_path / "out"), case.key)
    assert not result.refused, [str(exc) for exc in result.refused]
    assert changed == {}, f"applying the {case.key} fix to its own output changed {sorted(changed)}"


def test_no_stray_case_files():
    """A ``.out.py`` without its ``.in.py`` (a renamed case) would silently never run."""
    for out in CASES_DIR.rglob("*.out.py"):
        assert out.with_name(out.name.replace(".out.py", ".in.py")).exists(), out
    for folder in CASES_DIR.glob("*/*"):
        if folder.is_dir() and folder.name not in ("in", "out"):
            assert (folder / "in").is_dir(), f"{folder}: a case folder needs in/"
