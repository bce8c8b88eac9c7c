"""apply writes all files or none, also when it is killed or interrupted, and never overwrites an edit
made while it writes (``optimizer_tool.transaction``; issue 14 items 2 and 3).

Kills and pauses use the transaction's test hook (``T2S_OPT_TEST_KILL_AT`` / ``T2S_OPT_TEST_PAUSE_AT``
name a phase boundary), so every phase is hit deterministically, without timing signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from casefiles import case, write_tree
from typer.testing import CliRunner

import optimizer_tool.cli.apply as cli_apply
from optimizer_tool import transaction
from optimizer_tool.cli import app
from optimizer_tool.transaction import Interrupted, TransactionError, commit, recover

ROOT = Path(__file__).resolve().parents[2]
COMMIT = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from optimizer_tool.transaction import commit\n"
    "spec = json.loads(sys.argv[1])\n"
    "commit({Path(p): bytes.fromhex(n) for p, (o, n) in spec.items()},"
    " {Path(p): bytes.fromhex(o) for p, (o, n) in spec.items()})\n"
)
# Exact bytes: a CRLF file, a latin-1 file with its coding cookie, a BOM, an executable script.
FILES = {
    "a.py": (b"x = 1\r\ny = 2\r\n", b"x = 1\r\ny = 3\r\n"),
    "b.py": (b"# -*- coding: latin-1 -*-\nname = '\xe9t\xe9'\n", b"# -*- coding: latin-1 -*-\nname = '\xe9'\n"),
    "sub/c.py": (b"\xef\xbb\xbfz = 0\n", b"\xef\xbb\xbfz = 1\n"),
    "sub/d.py": (b"#!/usr/bin/env python\nprint(1)\n", b"#!/usr/bin/env python\nprint(2)\n"),
}
ORIGINALS = {rel: old for rel, (old, _) in FILES.items()}
CHANGED = {rel: new for rel, (_, new) in FILES.items()}


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too: a leftover temporary file or journal shows)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture
def files(tmp_path) -> Path:
    folder = tmp_path / "project"
    for rel, (original, _) in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(original)
    (folder / "sub/d.py").chmod(0o755)
    return folder


def run_commit(folder: Path, **hook: str) -> subprocess.CompletedProcess:
    spec = {str(folder / rel): [old.hex(), new.hex()] for rel, (old, new) in FILES.items()}
    env = {**os.environ, **hook}
    return subprocess.run(
        [sys.executable, "-c", COMMIT, json.dumps(spec)], cwd=ROOT, env=env, capture_output=True, timeout=120
    )


def commit_in_process(folder: Path) -> None:
    commit({folder / r: new for r, (_, new) in FILES.items()}, {folder / r: old for r, (old, _) in FILES.items()})


def test_commit_writes_the_exact_bytes_keeps_modes_and_leaves_nothing_behind(files):
    commit_in_process(files)
    assert tree(files) == CHANGED
    assert (files / "sub/d.py").stat().st_mode & 0o777 == 0o755
    assert recover(files) is None


# phase -> how many of the 4 files hold their new bytes when the process dies there
KILLED_AT = {"journal": 0, "temps": 0, "rename:1": 0, "renamed:1": 1, "renamed:3": 3, "renamed:4": 4, "committed": 4}


@pytest.mark.parametrize("phase", list(KILLED_AT))
def test_killed_at_every_phase_each_file_is_whole_and_recover_makes_the_tree_consistent(files, phase):
    done = run_commit(files, T2S_OPT_TEST_KILL_AT=phase)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    after = tree(files)
    assert transaction.JOURNAL in after, "the journal names what to undo"
    new = [rel for rel in FILES if after[rel] == FILES[rel][1]]
    assert all(after[rel] in FILES[rel] for rel in FILES), "every file is either its original or its new bytes"
    assert len(new) == KILLED_AT[phase]

    message = recover(files)
    if phase == "committed":  # past the commit point: the apply is finished, only its leftovers go
        assert message.startswith(f"finished an apply interrupted in {files} after writing its 4 file(s)")
        assert tree(files) == CHANGED
    else:
        assert message.startswith(f"rolled back an apply interrupted in {files}: ")
        assert ("no file had been replaced" in message) == (not new)
        assert all(rel in message for rel in new), message
        assert tree(files) == ORIGINALS  # and no journal or temporary file is left
    assert (files / "sub/d.py").stat().st_mode & 0o777 == 0o755
    assert recover(files) is None


@pytest.mark.parametrize(
    "change,why",
    [
        (lambda p: p.write_bytes(p.read_bytes() + b"# mine\n"), "its content differs"),
        (lambda p: p.unlink(), "it was deleted"),
        (lambda p: p.write_bytes(b"name = '\xe9'\n"), "its content differs"),  # not UTF-8 any more
    ],
    ids=["edited", "deleted", "not-utf8"],
)
def test_a_file_changed_just_before_its_rename_stops_the_commit_and_restores_the_others(
    files, monkeypatch, change, why
):
    victim = files / "sub/c.py"

    def hook(phase: str) -> None:
        if phase == "rename:3":  # a.py and b.py are replaced already
            change(victim)

    monkeypatch.setattr(transaction, "_checkpoint", hook)
    with pytest.raises(TransactionError) as raised:
        commit_in_process(files)
    message = str(raised.value)
    assert message.startswith(f"{victim} changed on disk while apply was writing ({why}"), message
    assert message.endswith("; nothing was written, run apply again")
    expected = dict(ORIGINALS)
    if victim.exists():
        expected["sub/c.py"] = victim.read_bytes()
    else:
        del expected["sub/c.py"]
    assert tree(files) == expected  # the others restored, the user's change kept, nothing left behind


def test_a_replaced_file_edited_before_the_roll_back_is_kept_and_reported(files, monkeypatch):
    """The user's edit wins over the roll-back: the journal stays, and recover keeps the original beside it."""
    edited = b"x = 1\r\ny = 3\r\n# mine\r\n"

    def hook(phase: str) -> None:
        if phase == "rename:3":
            (files / "a.py").write_bytes(edited)  # replaced already, then edited
            (files / "sub/c.py").write_bytes(b"z = 9\n")  # stops the commit

    monkeypatch.setattr(transaction, "_checkpoint", hook)
    with pytest.raises(TransactionError, match=r"the roll-back failed too: .*a\.py: it matches neither"):
        commit_in_process(files)
    assert (files / transaction.JOURNAL).exists()
    message = recover(files)
    assert message == (
        f"rolled back an apply interrupted in {files}: no file had been replaced; left a.py as it is (it matches "
        "neither its original nor the new content; its original is kept in a.py.t2s-opt-original)"
    )
    assert tree(files) == {
        **ORIGINALS,
        "a.py": edited,
        "a.py.t2s-opt-original": ORIGINALS["a.py"],
        "sub/c.py": b"z = 9\n",
    }


@pytest.mark.parametrize(
    "phase,outcome",
    [
        ("temps", "while writing 4 file(s): no file had been replaced; nothing was written"),
        ("renamed:2", "while writing 4 file(s): rolled back the 2 file(s) already replaced; nothing was written"),
        ("committed", "after every file was written: the apply finished"),
    ],
)
def test_sigint_is_deferred_then_rolls_back_or_finishes_and_says_which(files, monkeypatch, phase, outcome):
    def hook(at: str) -> None:
        if at == phase:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(transaction, "_checkpoint", hook)
    with pytest.raises(Interrupted) as raised:
        commit_in_process(files)
    assert str(raised.value) == f"interrupted (SIGINT) {outcome}"
    assert raised.value.signum == signal.SIGINT
    assert tree(files) == (CHANGED if phase == "committed" else ORIGINALS)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back


def wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_running_apply_is_left_alone_and_a_second_one_is_refused(files, tmp_path):
    gate = tmp_path / "gate"
    env = {**os.environ, "T2S_OPT_TEST_PAUSE_AT": "temps", "T2S_OPT_TEST_PAUSE_GATE": str(gate)}
    spec = {str(files / rel): [old.hex(), new.hex()] for rel, (old, new) in FILES.items()}
    proc = subprocess.Popen([sys.executable, "-c", COMMIT, json.dumps(spec)], cwd=ROOT, env=env)
    try:
        wait_for(Path(f"{gate}.paused"))
        during = tree(files)
        assert recover(files) == f"an apply (pid {proc.pid}) is writing in {files}: left its files alone"
        assert tree(files) == during
        with pytest.raises(TransactionError, match="another t2s-opt apply is writing in"):
            commit_in_process(files)
        assert tree(files) == during
    finally:
        gate.touch()
        assert proc.wait(timeout=60) == 0
    assert tree(files) == CHANGED


def test_recover_removes_stray_temporary_files_of_earlier_versions(files):
    (files / ".a.py.k2j4l1.t2s-opt.tmp").write_bytes(b"half")
    (files / "sub/.c.py.t2s-opt.new").write_bytes(b"half")
    assert recover(files) == f"removed 2 leftover temporary file(s) of an interrupted apply in {files}"
    assert tree(files) == ORIGINALS


# --- end to end: t2s-opt apply --------------------------------------------------------------------
@pytest.fixture
def project(tmp_path) -> Path:
    """``--only cosine`` changes two files here: config.py and schedulers/ddim.py."""
    return write_tree(case("cosine/reference").inputs, tmp_path / "project")


@pytest.fixture
def applied(project, tmp_path) -> dict[str, bytes]:
    """The project as an uninterrupted ``apply --only cosine`` leaves it."""
    pristine = write_tree(case("cosine/reference").inputs, tmp_path / "pristine")
    result = CliRunner().invoke(app, ["apply", "--only", "cosine", str(pristine)])
    assert result.exit_code == 0, result.output
    return tree(pristine)


def cli(project: Path, **env: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "optimizer_tool.cli", "apply", "--only", "cosine", str(project)]
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_apply_killed_between_two_renames_is_rolled_back_by_the_next_apply(project, applied):
    before = tree(project)
    proc = cli(project, T2S_OPT_TEST_KILL_AT="renamed:1")
    assert proc.wait(timeout=120) == -signal.SIGKILL, proc.communicate()
    killed = tree(project)
    assert [rel for rel in before if killed[rel] != before[rel]] in (["config.py"], ["schedulers/ddim.py"])
    assert transaction.JOURNAL in killed

    result = CliRunner().invoke(app, ["apply", "--only", "cosine", str(project)])
    assert result.exit_code == 0, result.output
    assert f"t2s-opt: rolled back an apply interrupted in {project}: restored " in result.stderr
    assert "wrote 2 file(s)" in result.stdout
    assert tree(project) == applied  # as an apply that was never interrupted: no journal, no temporary file


def test_sigint_during_the_renames_rolls_back_says_so_and_exits_130(project, tmp_path):
    before = tree(project)
    gate = tmp_path / "gate"
    proc = cli(project, T2S_OPT_TEST_PAUSE_AT="renamed:1", T2S_OPT_TEST_PAUSE_GATE=str(gate))
    try:
        wait_for(Path(f"{gate}.paused"), 120)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    finally:
        gate.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == (
        "t2s-opt: interrupted (SIGINT) while writing 2 file(s): rolled back the 1 file(s) already replaced; "
        "nothing was written\n"
    )
    assert out == ""
    assert tree(project) == before


def test_stray_temporary_files_of_an_earlier_apply_are_removed(project):
    """What a killed apply of earlier versions left (``.NAME.XXXX.t2s-opt.tmp``) goes, with a message."""
    (project / ".config.py.a1b2c3.t2s-opt.tmp").write_text("half")
    result = CliRunner().invoke(app, ["apply", "--only", "cosine", "--diff", str(project)])
    assert result.exit_code == 1, result.output
    assert f"t2s-opt: removed 1 leftover temporary file(s) of an interrupted apply in {project}\n" in result.stderr
    assert not (project / ".config.py.a1b2c3.t2s-opt.tmp").exists()


CHANGES = {
    "edited": (lambda p: p.write_text(p.read_text() + "# mine\n"), "its content differs"),
    "deleted": (lambda p: p.unlink(), "it was deleted"),
    "not-utf8": (lambda p: p.write_bytes(p.read_bytes().replace(b"linear", b"lin\xe9ar")), "its content differs"),
}


def refused(result, project: Path, before: dict[str, bytes], victim: Path, when: str, why: str) -> None:
    """Exit 2, one message that names the file and says nothing was written; every other file as it was."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert result.stderr.startswith(f"t2s-opt: error: {victim} changed on disk {when} ({why}")
    assert result.stderr.endswith("nothing was written, run apply again\n")
    expected = dict(before)
    rel = victim.relative_to(project).as_posix()
    if victim.exists():
        expected[rel] = victim.read_bytes()
    else:
        del expected[rel]
    assert tree(project) == expected  # the other file not (or no longer) patched, the user's change kept


@pytest.mark.parametrize("how", list(CHANGES))
def test_a_file_changed_between_the_fixes_and_the_writing_is_refused(project, monkeypatch, how):
    """Deleted or made non-UTF-8 after the analysis: a refusal, not a traceback."""
    before = tree(project)
    change, why = CHANGES[how]
    victim = project / "schedulers/ddim.py"
    real = cli_apply.write_all

    def change_then_write(changes, originals):
        change(victim)
        real(changes, originals)

    monkeypatch.setattr(cli_apply, "write_all", change_then_write)
    result = CliRunner().invoke(app, ["apply", "--only", "cosine", str(project)])
    refused(result, project, before, victim, "while the fixes were computed", why)


@pytest.mark.parametrize("how", list(CHANGES))
def test_a_file_changed_while_apply_renames_is_not_overwritten(project, monkeypatch, how):
    """Changed after the first file was moved into place: before, apply overwrote it (exit 0)."""
    before = tree(project)
    change, why = CHANGES[how]
    real = os.replace
    victims: list[Path] = []

    def change_the_other_then_replace(src, dst):
        dst = Path(dst)
        if not victims and dst.name in ("config.py", "ddim.py"):
            victims.append(project / ("schedulers/ddim.py" if dst.name == "config.py" else "config.py"))
            change(victims[0])
        real(src, dst)

    monkeypatch.setattr(os, "replace", change_the_other_then_replace)
    result = CliRunner().invoke(app, ["apply", "--only", "cosine", str(project)])
    monkeypatch.setattr(os, "replace", real)
    refused(result, project, before, victims[0], "while apply was writing", why)
