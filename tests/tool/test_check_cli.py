"""`t2s-opt check` as a user and a CI job see it: exit codes, formats, selection, suppression,
configuration and bad input."""

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optimizer_tool.cli import app

MISSING_EMA = """\
import torch

def train(model, data):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in data:
        loss = model(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
"""


def run(*args):
    result = CliRunner().invoke(app, ["check", *map(str, args)])
    return result.exit_code, result.output


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_findings_exit_1_and_concise_lines(tmp_path):
    path = write(tmp_path, "train.py", MISSING_EMA)
    code, out = run(path, "--output-format", "concise")
    assert code == 1
    assert "train.py:9:9 EMA001 [missing]" in out


def test_clean_selection_exits_0(tmp_path):
    path = write(tmp_path, "train.py", MISSING_EMA)
    code, out = run(path, "--select", "CLIP", "--output-format", "concise")
    assert code == 0, out
    assert "All checks passed" in out


def test_fail_on_bug_lets_missing_pass(tmp_path):
    path = write(tmp_path, "train.py", MISSING_EMA)
    code, out = run(path, "--fail-on", "bug", "--output-format", "concise")
    assert code == 0
    assert "EMA001" in out  # still reported, just not failing


def test_only_and_skip_by_optimization_key(tmp_path):
    path = write(tmp_path, "train.py", MISSING_EMA)
    _, only = run(path, "--only", "ema", "--output-format", "concise")
    assert "EMA001" in only and "LR001" not in only
    _, skipped = run(path, "--skip", "ema", "--output-format", "concise")
    assert "EMA001" not in skipped and "LR001" in skipped
    code, out = run(path, "--only", "nonsense")
    assert code == 2 and "unknown optimization" in out


def test_ignore_by_prefix(tmp_path):
    path = write(tmp_path, "train.py", MISSING_EMA)
    _, out = run(path, "--ignore", "EMA,LR", "--output-format", "concise")
    assert "EMA001" not in out and "LR001" not in out and "MON001" in out


def test_json_sarif_github_formats(tmp_path):
    path = write(tmp_path, "train.py", MISSING_EMA)
    _, out = run(path, "--output-format", "json")
    document = json.loads(out)
    assert document["schema_version"] == 2
    ema = next(r for r in document["findings"] if r["code"] == "EMA001")
    assert ema["location"] == {"row": 9, "column": 9} and ema["optimization"] == "ema"
    (unit,) = document["units"]
    assert unit["entry"] == "train.py" and unit["verdicts"]["ema"]["state"] == "missing"
    assert unit["verdicts"]["clipping"]["state"] == "present"

    report = tmp_path / "report.sarif"
    code, _ = run(path, "--output-format", "sarif", "-o", report)
    assert code == 1
    sarif = json.loads(report.read_text())
    results = sarif["runs"][0]["results"]
    assert any(
        r["ruleId"] == "EMA001" and r["locations"][0]["physicalLocation"]["region"]["startLine"] == 9 for r in results
    )
    assert {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]} >= {"EMA001", "LPIPS002"}

    _, out = run(path, "--output-format", "github")
    assert "::warning title=t2s-opt (EMA001),file=" in out and ",line=9,col=9::" in out


def test_default_table_is_a_checklist(tmp_path):
    path = write(tmp_path, "train.py", MISSING_EMA)
    _, out = run(path)
    assert "EMA of the weights" in out and "✗" in out and "✓" in out


def test_suppression_comment_and_unused_suppression(tmp_path):
    source = MISSING_EMA.replace("optimizer.step()", "optimizer.step()  # t2s-opt: ignore[EMA001]")
    source += "\nx = 1  # t2s-opt: ignore[LPIPS002]\n"
    path = write(tmp_path, "train.py", source)
    _, out = run(path, "--output-format", "concise")
    assert "EMA001" not in out
    assert "train.py:11:1 T2S001" in out  # the LPIPS002 suppression suppresses nothing


def test_suppression_text_inside_a_string_is_not_a_suppression(tmp_path):
    source = MISSING_EMA.replace("optimizer.step()", "optimizer.step(); s = '# t2s-opt: ignore[EMA001]'")
    path = write(tmp_path, "train.py", source)
    _, out = run(path, "--output-format", "concise")
    assert "EMA001" in out


def test_pyproject_configuration(tmp_path):
    write(
        tmp_path,
        "pyproject.toml",
        """
        [tool.t2s-opt]
        require = ["ema"]
        ignore = ["LR"]

        [[tool.t2s-opt.per-path]]
        path = "legacy/*.py"
        ignore = ["EMA"]
    """,
    )
    train = write(tmp_path, "train.py", MISSING_EMA)
    write(tmp_path, "legacy/old.py", MISSING_EMA)
    code, out = run(tmp_path, "--output-format", "concise")
    assert code == 1
    assert "train.py:9:9 EMA001 [missing]" in out
    assert "legacy/old.py:9:9 EMA001" not in out
    assert "LR001" not in out
    assert "train.py:8:9 MON001 [info]" in out  # not required by this project: information only
    code, out = run(train, "--output-format", "concise", "--no-config")
    assert "LR001" in out


def test_bad_pyproject_configuration_names_the_key(tmp_path):
    write(tmp_path, "pyproject.toml", '[tool.t2s-opt]\nrequre = ["ema"]\n')
    path = write(tmp_path, "train.py", MISSING_EMA)
    code, out = run(path)
    assert code == 2 and "requre" in out and "pyproject.toml" in out


def test_syntax_error_is_reported_and_other_files_still_checked(tmp_path):
    write(tmp_path, "broken.py", "def train(:\n    pass\n")
    write(tmp_path, "train.py", MISSING_EMA)
    code, out = run(tmp_path, "--output-format", "concise")
    assert code == 2
    assert "broken.py:1:11 E999" in out and "syntax error" in out
    assert "train.py:9:9 EMA001" in out


def test_non_utf8_file_is_named(tmp_path):
    (tmp_path / "latin.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    code, out = run(tmp_path / "latin.py", "--output-format", "concise")
    assert code == 2 and "latin.py:1:1" in out and "UTF-8" in out


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: p / "missing.py", "no such file or folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "contains no Python files"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "not a Python file"),
    ],
)
def test_bad_paths_exit_2_with_a_clear_message(tmp_path, make, expected):
    code, out = run(make(tmp_path))
    assert code == 2 and expected in out


def test_local_imports_are_followed(tmp_path):
    """A value set in config.py and an EMA helper in utils/ema.py count for the trainer."""
    write(
        tmp_path,
        "config.py",
        "from dataclasses import dataclass\n\n@dataclass\nclass TrainConfig:\n    beta_schedule: str = 'cosine'\n",
    )
    write(
        tmp_path,
        "utils/ema.py",
        "class EMA:\n"
        "    def __init__(self, model, decay=0.999):\n"
        "        self.model = model\n"
        "    def update(self):\n"
        "        pass\n",
    )
    write(
        tmp_path,
        "train.py",
        """
        import torch
        from config import TrainConfig
        from utils.ema import EMA

        def train(model, data):
            cfg = TrainConfig()
            ema = EMA(model)
            optimizer = torch.optim.AdamW(model.parameters())
            for x in data:
                model(x).backward()
                optimizer.step()
                ema.update()
    """,
    )
    _, out = run(tmp_path / "train.py", "--only", "ema,cosine", "--output-format", "concise")
    assert "EMA001" not in out and "COS001" not in out


def test_explain_and_rules():
    result = CliRunner().invoke(app, ["explain", "LPIPS002"])
    assert result.exit_code == 0 and "no_grad" in result.output
    result = CliRunner().invoke(app, ["explain", "NOPE1"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["rules"])
    assert "EMA001" in result.output and "MON001" in result.output


def test_output_onto_an_input_is_refused_and_the_source_kept(tmp_path):
    path = write(tmp_path, "train.py", MISSING_EMA)
    before = path.read_bytes()
    for target in (path, tmp_path / "." / "train.py"):
        code, out = run(path, "-o", target)
        assert code == 2
        assert f"-o {target}: is a Python file" in out
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "target, why",
    [("missing_folder/report.json", "does not exist"), (".", "is a folder"), ("/proc/report.json", "cannot write")],
)
def test_output_that_cannot_be_written_is_a_usage_error(tmp_path, monkeypatch, target, why):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "train.py", MISSING_EMA)
    code, out = run(path, "-o", target)
    assert code == 2 and "Traceback" not in out
    assert f"-o {target}:" in out and why in out
