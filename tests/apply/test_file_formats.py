"""Files are written back as they were read: a PEP 263 coding cookie's encoding, a UTF-8 byte-order
mark, bare-CR line endings; ``--out FILE`` copies the trainer, not its folder's data; a bad ``--out``
is refused before any analysis (issue 14, item 9)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from optimizer_tool import apply as apply_module
from optimizer_tool.cli import app
from optimizer_tool.testing import MINIMAL_TRAINER

TRAINER = MINIMAL_TRAINER
CLIPPED = "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"


def apply(*args: str):
    return CliRunner().invoke(app, ["apply", "--select", "CLIP001", *args])


@pytest.mark.parametrize(
    "name, raw, encoding",
    [
        ("latin1.py", ("# -*- coding: latin-1 -*-\n# réglé par Zoé\n" + TRAINER).encode("latin-1"), "latin-1"),
        ("bom.py", b"\xef\xbb\xbf" + TRAINER.encode(), "utf-8-sig"),
        ("cr_only.py", TRAINER.replace("\n", "\r").encode(), "utf-8"),
        ("crlf.py", TRAINER.replace("\n", "\r\n").encode(), "utf-8"),
    ],
)
def test_a_fixed_file_keeps_its_encoding_mark_and_line_endings(tmp_path, name, raw, encoding):
    path = tmp_path / name
    path.write_bytes(raw)
    result = apply(str(tmp_path))
    assert result.exit_code == 0, result.output
    data = path.read_bytes()
    text = data.decode(encoding)  # still readable as it was (latin-1 stays latin-1, the BOM stays)
    assert data.startswith(b"\xef\xbb\xbf") == raw.startswith(b"\xef\xbb\xbf")
    assert CLIPPED in text
    newline = "\r\n" if b"\r\n" in raw else "\r" if b"\r" in raw else "\n"
    assert text.endswith("optimizer.step()" + newline)
    assert text.count(newline) == raw.decode(encoding).count(newline) + 1  # one line added, no ending lost
    if encoding == "latin-1":
        assert "# réglé par Zoé" in text
    compile(data, name, "exec")  # Python reads the written bytes as it read the original


def test_a_fix_the_files_encoding_cannot_hold_is_refused_and_nothing_written(tmp_path, monkeypatch):
    path = tmp_path / "latin1.py"
    raw = ("# -*- coding: latin-1 -*-\n" + TRAINER).encode("latin-1")
    path.write_bytes(raw)
    real_encoded = apply_module.FixPlan.encoded

    def with_a_snowman(plan):
        plan.changed = {p: text + "# ☃\n" for p, text in plan.changed.items()}
        return real_encoded(plan)

    monkeypatch.setattr(apply_module.FixPlan, "encoded", with_a_snowman)
    result = apply(str(tmp_path))
    assert result.exit_code == 2
    assert "latin1.py: the fix adds '☃', which the file's encoding (iso-8859-1) cannot hold" in result.output
    assert path.read_bytes() == raw


def test_out_on_a_file_copies_the_trainer_and_its_modules_not_the_folder(tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "clips.bin").write_bytes(b"\0" * 200_000)
    (project / "unrelated.py").write_text("print('not imported')\n")
    (project / "config.yaml").write_text("lr: 1e-4\n")
    (project / "helpers.py").write_text("def build(torch):\n    return torch.nn.Linear(2, 2)\n")
    (project / "train.py").write_text("from helpers import build\n" + TRAINER)
    out = tmp_path / "patched"
    result = apply("--out", str(out), str(project / "train.py"))
    assert result.exit_code == 0, result.output
    copied = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert copied == ["config.yaml", "helpers.py", "train.py"]
    assert CLIPPED in (out / "train.py").read_text()
    assert CLIPPED not in (project / "train.py").read_text()


def test_a_bad_out_is_refused_before_the_analysis(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "train.py").write_text(TRAINER)
    out = tmp_path / "patched"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def no_analysis(*args, **kwargs):
        raise AssertionError("analysed before the arguments were checked")

    monkeypatch.setattr("optimizer_tool.cli.apply.plan", no_analysis)
    result = apply("--out", str(out), str(tmp_path / "project"))
    assert result.exit_code == 2
    assert "exists and is not an empty folder" in result.output
    result = apply("--out", str(tmp_path / "project" / "inside"), str(tmp_path / "project"))
    assert result.exit_code == 2
    assert "must not be inside the project it copies" in result.output
