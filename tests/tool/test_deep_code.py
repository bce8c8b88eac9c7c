"""Deeply nested code that CPython compiles is checked, and code it cannot compile is one input
error with its path (exit 2) while the other files are still checked: never a RecursionError
traceback, a segfault or a broken worker pool (issue 14, item 1)."""

import re

import pytest
from typer.testing import CliRunner

from optimizer_tool import deep
from optimizer_tool.cli import app
from optimizer_tool.testing import MINIMAL_TRAINER

TRAINER = MINIMAL_TRAINER


def plus_chain(terms: int) -> str:
    return "total = " + " + ".join(["1"] * terms) + "\n"


def elif_chain(branches: int) -> str:
    arms = "".join(f"    elif v == {i}:\n        return {i}\n" for i in range(1, branches))
    return "def pick(v):\n    if v == 0:\n        return 0\n" + arms


def implicit_strings(count: int) -> str:
    return "text = (\n" + "".join('    "a"\n' for _ in range(count)) + ")\n"


def check(*args):
    result = CliRunner().invoke(app, ["check", "--output-format", "concise", *map(str, args)])
    assert "Traceback" not in result.output and not isinstance(result.exception, RecursionError), result.output
    return result.exit_code, result.output


@pytest.fixture
def deep_project(tmp_path):
    """A trainer whose own file holds the deepest code CPython compiles (about 3,000 levels at its
    default recursion limit), and a second trainer beside it."""
    (tmp_path / "deep_train.py").write_text(TRAINER + plus_chain(2600) + elif_chain(2600) + implicit_strings(2000))
    (tmp_path / "other.py").write_text(TRAINER)
    return tmp_path


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_code_cpython_compiles_is_checked(deep_project, jobs):
    compile((deep_project / "deep_train.py").read_text(), "deep_train.py", "exec")  # CPython accepts it
    code, out = check(deep_project, "-j", jobs)
    assert code == 1
    for name in ("deep_train.py", "other.py"):  # both trainers judged: the unit's findings are there
        assert re.search(rf"^{name}:\d+:\d+ CLIP001 ", out, re.M), out
    assert "E999" not in out


def test_code_cpython_cannot_compile_is_an_input_error_and_the_rest_is_checked(tmp_path):
    too_deep = tmp_path / "too_deep.py"
    too_deep.write_text(TRAINER + plus_chain(3200))
    with pytest.raises(RecursionError):
        compile(too_deep.read_text(), "too_deep.py", "exec")
    (tmp_path / "other.py").write_text(TRAINER)
    for jobs in ("1", "2"):
        code, out = check(tmp_path, "-j", jobs)
        assert code == 2
        assert re.search(r"^too_deep\.py:1:1 E999 \[bug\] too deeply nested: Python itself cannot compile", out, re.M)
        assert re.search(r"^other\.py:\d+:\d+ CLIP001 ", out, re.M), out


def test_analysis_out_of_stack_is_one_input_error_at_the_deepest_line(tmp_path, monkeypatch):
    """Should a file be deeper than the analysis thread's limit allows, its unit becomes one input
    error naming the file and line of the deepest code; other units are still checked."""
    monkeypatch.setattr(deep, "RECURSION_LIMIT", 1200)  # below what a 2,000-term chain needs
    (tmp_path / "deep_train.py").write_text(TRAINER + "\n" * 5 + plus_chain(2000))
    (tmp_path / "other.py").write_text(TRAINER)
    code, out = check(tmp_path)
    assert code == 2
    assert re.search(r"^deep_train\.py:14:1 E999 \[bug\] too deeply nested for the analysis", out, re.M), out
    assert re.search(r"^other\.py:\d+:\d+ CLIP001 ", out, re.M), out


def test_apply_previews_fixes_on_deep_code(tmp_path):
    (tmp_path / "deep_train.py").write_text(TRAINER + plus_chain(1500) + elif_chain(1500))
    result = CliRunner().invoke(app, ["apply", "--diff", "--select", "CLIP001", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "clip_grad_norm_" in result.output
    assert (tmp_path / "deep_train.py").read_text().endswith("return 1499\n")  # --diff wrote nothing
