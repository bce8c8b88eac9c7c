"""``check --jobs``: worker processes give exactly the findings and checklist of a serial run."""

from pathlib import Path

from optimizer_tool.engine import run_check
from optimizer_tool.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "trainers"


def _outcome(paths, jobs):
    result, _ = run_check(paths, Settings(), jobs=jobs)
    return result.findings, [(s.code, s.unit, s.state) for s in result.statuses], result.units


def test_fixtures_same_findings_with_two_workers():
    serial = _outcome([FIXTURES], jobs=1)
    parallel = _outcome([FIXTURES], jobs=2)
    assert serial[0], "the fixtures have findings: an empty result would prove nothing"
    assert parallel == serial


def test_parse_errors_and_overrides_reach_the_workers(tmp_path):
    (tmp_path / "broken.py").write_text("def f(:\n    pass\n")
    trainer = tmp_path / "train.py"
    trainer.write_text("import torch\n")
    override = {
        trainer.resolve(): (
            "import torch\nfor x in data:\n    loss = model(x).mean()\n    loss.backward()\n    opt.step()\n"
        )
    }
    serial, _ = run_check([tmp_path], Settings(), overrides=override, jobs=1)
    parallel, _ = run_check([tmp_path], Settings(), overrides=override, jobs=2)
    assert [f.code for f in serial.findings if f.is_error] == ["E999"]
    assert any(f.location.path == trainer.resolve() and not f.is_error for f in serial.findings)
    assert parallel.findings == serial.findings
