"""Each fixture trainer's findings, compared exactly with its `expected.txt` (TorchFix style:
`path:line:col CODE severity`, paths relative to the fixture folder).

Regenerate after an intended change with `T2S_UPDATE_EXPECTED=1 pytest tests/tool/test_fixtures.py`
and review the diff against the fixture's INTENT.md before committing it."""

import os
from pathlib import Path

import pytest

from optimizer_tool.engine import run_check
from optimizer_tool.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trainers"
CASES = sorted(p for p in FIXTURES.iterdir() if (p / "INTENT.md").exists())


def findings_of(folder: Path) -> list[str]:
    result, _ = run_check([folder], Settings())
    return [
        f"{f.location.path.relative_to(folder).as_posix()}:{f.location.line}:{f.location.col} "
        f"{f.code} {f.severity.value}"
        for f in result.findings
    ]


@pytest.mark.parametrize("folder", CASES, ids=[p.name for p in CASES])
def test_fixture_findings_match_expected(folder):
    got = findings_of(folder)
    expected_file = folder / "expected.txt"
    if os.environ.get("T2S_UPDATE_EXPECTED"):
        expected_file.write_text("".join(f"{line}\n" for line in got), encoding="utf-8")
    expected = expected_file.read_text(encoding="utf-8").splitlines()
    assert got == expected


def test_fully_optimized_trainer_is_clean():
    assert findings_of(FIXTURES / "fully_optimized") == []


def test_comments_and_strings_never_count():
    """A trainer that only *mentions* every optimization gets every 'missing' finding."""
    codes = {line.split()[1] for line in findings_of(FIXTURES / "comments_only")}
    assert {"EMA001", "COS001", "VPRED001", "LPIPS001", "CLIP001", "LR001", "MON001", "RES001"} <= codes


def test_plan_snippets_mistakes_are_caught():
    codes = {line.split()[1] for line in findings_of(FIXTURES / "plan_snippets")}
    # LPIPS under no_grad, on the noise prediction, in [0,1]; EMA gated twice with a too-long horizon.
    assert {"LPIPS002", "LPIPS003", "LPIPS004", "EMA004", "EMA005"} <= codes


def test_reference_trainer_gets_exactly_what_the_plan_lists():
    root = Path(__file__).resolve().parents[2] / "reference_trainer"
    result, _ = run_check([root], Settings())
    codes = sorted(f.code for f in result.findings)
    assert codes == sorted(["EMA001", "COS001", "OFF001", "VPRED001", "LR003", "LPIPS001", "RES001", "MON001"])
