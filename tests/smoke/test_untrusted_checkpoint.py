"""Checkpoints are untrusted data (issue 14, item 8): t2s-opt never unpickles one in its own process.

The checkpoints here hold an object whose unpickling runs code (``__reduce__``): it appends the pid
and ``sys.argv[0]`` of the process that unpickles it to a marker file. t2s-opt reads checkpoints with
``weights_only=True`` only; one that needs full unpickling is unpickled in a separate process (which
passes back plain tensors), or the EMA check is n/a with the reason."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import torch
from smoke_helpers import PYTHON, explain, run_smoke
from test_ema_formats import trained

from optimizer_tool.smoke.checkpoint import CheckpointNotJudged, Unpickler, load_checkpoint
from optimizer_tool.smoke.checks import Expectations, check_ema_checkpoint
from optimizer_tool.smoke.records import ProbeRecord

PAYLOAD_MODULE = "t2s_smoke_payload"
PAYLOAD = textwrap.dedent("""
    import os, sys

    def mark(path):
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {sys.argv[0]}\\n")
        return "this ran while unpickling"

    class Payload:
        def __init__(self, path):
            self.path = path

        def __reduce__(self):
            return (mark, (self.path,))
""")


@pytest.fixture
def malicious_checkpoint(tmp_path, monkeypatch):
    """A checkpoint with model and EMA weights, and a payload; its module stays importable here."""
    (tmp_path / f"{PAYLOAD_MODULE}.py").write_text(PAYLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(PAYLOAD_MODULE)
    marker = tmp_path / "unpickled-by.txt"
    model, _, ema, init = trained()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "config": module.Payload(str(marker))}, path)
    monkeypatch.delitem(sys.modules, PAYLOAD_MODULE)  # unpickling would import it again, and run it
    record = ProbeRecord(
        path=tmp_path / "probe.jsonl",
        init=init,
        saves=[{"ev": "save", "type": "dict", "keys": ["model", "ema", "config"], "final_path": str(path)}],
    )
    return record, marker


def unpickled_by(marker):
    """(pid, argv[0]) of every process that unpickled the payload."""
    if not marker.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in marker.read_text().splitlines()]


def test_without_a_separate_process_the_ema_check_is_not_applicable(malicious_checkpoint):
    record, marker = malicious_checkpoint
    row = check_ema_checkpoint(record, Expectations())
    assert unpickled_by(marker) == [], "the checkpoint was unpickled in t2s-opt's own process"
    assert row.status == "n/a", row
    assert "needs weights_only=False" in row.value and "does not unpickle checkpoints in its own process" in row.value
    assert f"{PAYLOAD_MODULE}.mark" in row.value  # the global weights_only=True refused


def test_the_ema_check_is_answered_from_a_separate_process(malicious_checkpoint, tmp_path):
    record, marker = malicious_checkpoint
    row = check_ema_checkpoint(record, Expectations(), Unpickler(cwd=tmp_path))
    pids = [int(pid) for pid, _ in unpickled_by(marker)]
    assert os.getpid() not in pids, "the checkpoint was unpickled in t2s-opt's own process"
    assert len(pids) == 1, "unpickled once, in the separate process"
    assert row.status == "pass" and row.data["tensors"] == 4, row
    assert "unpickled in a separate process" in row.detail and "weights_only=False" in row.detail


def test_a_checkpoint_that_does_not_load_anywhere_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"not a checkpoint")
    record = ProbeRecord(path=tmp_path / "p", saves=[{"type": "dict", "keys": ["model"], "final_path": str(path)}])
    row = check_ema_checkpoint(record, Expectations(), Unpickler(cwd=tmp_path))
    assert row.status == "fail" and "does not load back" in row.value, row


def test_past_the_deadline_nothing_is_unpickled(malicious_checkpoint, tmp_path):
    record, marker = malicious_checkpoint
    with pytest.raises(CheckpointNotJudged, match="--timeout reached"):
        load_checkpoint(record.saves[0]["final_path"], Unpickler(cwd=tmp_path, deadline=0.0))
    assert unpickled_by(marker) == []


def test_smoke_test_never_unpickles_the_trainers_checkpoint_itself(tmp_path):
    """End to end: the trainer saves the payload in its checkpoint; `smoke-test` judges the EMA from
    what the separate unpickling process passed back, and only that process ran the payload."""
    trainer = tmp_path / "trainer"
    trainer.mkdir()
    (trainer / f"{PAYLOAD_MODULE}.py").write_text(PAYLOAD)
    (trainer / "train.py").write_text(
        textwrap.dedent(f"""
        import os, sys, torch
        from {PAYLOAD_MODULE} import Payload
        os.makedirs(sys.argv[1], exist_ok=True)
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        ema = {{k: v.detach().clone() for k, v in model.state_dict().items()}}
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(5):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k].mul_(0.9).add_(v, alpha=0.1)
        checkpoint = {{"model": model.state_dict(), "ema": ema, "config": Payload(sys.argv[2])}}
        torch.save(checkpoint, sys.argv[1] + "/ckpt.pt")
    """)
    )
    marker = tmp_path / "unpickled-by.txt"
    result = run_smoke(tmp_path, [str(trainer), "--cmd", f"{PYTHON} train.py {{out}} {marker}"])
    assert result.report is not None, explain(result)
    processes = unpickled_by(marker)
    assert processes, explain(result)
    for _, argv0 in processes:
        assert argv0.endswith(os.path.join("optimizer_tool", "smoke", "unpickle.py")), processes
    ema = result.row("ema_checkpoint")
    assert ema["status"] == "pass" and ema["data"]["tensors"] == 2, ema
    assert "unpickled in a separate process" in ema["detail"]
