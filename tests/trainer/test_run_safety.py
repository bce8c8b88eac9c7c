"""Issue 14, items 4 and 5: a finished run is never destroyed by starting again into its --out, and a kill
at any point of a checkpoint save leaves a folder that resumes from the newest complete checkpoint.

Runs are real (`python -m reference_trainer.main`, in-process) with the smoke preset on 8 clips: 2 optimizer
steps per epoch, 2 epochs, checkpoints at steps 2 and 4. Kills are made with the trainer's test hook
(`T2S_TRAINER_CRASH_AT`, `os._exit` in a subprocess) or by raising from `run_dir.crash_point` in-process
where no clean-up runs after that point either."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reference_trainer import run_dir
from reference_trainer.main import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--preset", "smoke", "--set", "data.synthetic_samples=8", "--device", "cpu"]


def _train(out: Path, *extra: str) -> list:
    return ["train", *TINY, "--out", str(out), *extra]


def _rows(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def _snapshot(out: Path) -> dict:
    """Every file of the run folder and its bytes (the lock file aside: taking it is not a change to the run)."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != run_dir.LOCK
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_train(out)) == 0
    assert [r["step"] for r in _rows(out)] == [1, 2, 3, 4]
    return out


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A copy of the finished run, free to damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


# ---------------------------------------------------------------------------- item 4: a finished run is kept


def test_starting_again_into_a_finished_run_refuses_and_changes_nothing(run, capsys):
    before = _snapshot(run)
    assert main(_train(run)) == 2
    err = capsys.readouterr().err
    assert f"{run} already holds a training run" in err
    assert f"{run}/checkpoints/latest.pt (step 4, epoch 2)" in err  # the last step found
    assert "--resume auto" in err and f"--resume {run}/checkpoints/latest.pt" in err
    assert "--overwrite" in err and "add --epochs N" in err
    assert _snapshot(run) == before  # latest.pt, epoch files, metrics.jsonl, events: byte-identical, none added


def test_resuming_another_runs_checkpoint_into_a_run_folder_refuses(run, finished_run, capsys):
    before = _snapshot(run)
    assert main(_train(run, "--resume", str(finished_run / "checkpoints" / "epoch_1.pt"))) == 2
    assert "would mix the two" in capsys.readouterr().err
    assert _snapshot(run) == before


@pytest.mark.parametrize("resume", ["auto", "{run}/checkpoints/epoch_1.pt"])
def test_overwrite_and_resume_of_the_same_run_contradict(run, capsys, resume):
    before = _snapshot(run)
    assert main(_train(run, "--overwrite", "--resume", resume.format(run=run))) == 2
    assert "give one of them" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_overwrite_replaces_the_previous_run(run):
    assert main(_train(run, "--overwrite", "--epochs", "1")) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_1.pt", "latest.pt"]
    assert [(r["step"], r["epoch"]) for r in _rows(run)] == [(1, 1), (2, 1)]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert not (run / ".old-run.tmp").exists()


def test_resume_auto_continues_the_run_and_appends_to_its_metrics(run):
    before = (run / "metrics.jsonl").read_text()
    assert main(_train(run, "--resume", "auto", "--epochs", "3")) == 0
    after = (run / "metrics.jsonl").read_text()
    assert after.startswith(before)
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4, 5, 6]
    latest = run / "checkpoints" / "latest.pt"
    assert _step(latest) == 6 and os.path.samefile(latest, run / "checkpoints" / "epoch_3.pt")


def test_resume_auto_in_a_new_folder_starts_a_new_run(tmp_path):
    out = tmp_path / "new"
    assert main(_train(out, "--resume", "auto", "--epochs", "1")) == 0
    assert [r["step"] for r in _rows(out)] == [1, 2]


def test_a_second_trainer_on_a_folder_in_use_is_refused(run, capsys):
    before = _snapshot(run)
    with run_dir.lock(run):  # as a live trainer holds it
        assert main(_train(run, "--resume", "auto")) == 2
    assert "in use by another training process" in capsys.readouterr().err
    assert _snapshot(run) == before


# ---------------------------------------------------------------------------- item 5: crash leftovers


@pytest.mark.parametrize("damage", ["latest_behind", "latest_missing", "newest_truncated"])
def test_resume_from_latest_takes_the_newest_complete_checkpoint(run, damage):
    ckpts = run / "checkpoints"
    metrics = (run / "metrics.jsonl").read_bytes()
    first = {r["step"]: r for r in _rows(run)}
    if damage == "latest_behind":  # what a kill between the epoch file and latest.pt left (3 of 14 kills)
        (ckpts / "latest.pt").unlink()
        shutil.copyfile(ckpts / "epoch_1.pt", ckpts / "latest.pt")
    elif damage == "latest_missing":
        (ckpts / "latest.pt").unlink()
    else:  # the newest checkpoint cut short (a crash before its data reached the disk)
        for name in ("epoch_2.pt", "latest.pt"):
            data = (ckpts / name).read_bytes()
            (ckpts / name).unlink()
            (ckpts / name).write_bytes(data[: len(data) // 2])
    epoch_2 = (ckpts / "epoch_2.pt").stat().st_mtime_ns

    assert main(_train(run, "--resume", str(ckpts / "latest.pt"))) == 0
    assert _step(ckpts / "latest.pt") == 4
    if damage == "newest_truncated":  # resumed from epoch_1.pt: epoch 2 trained again, the same way
        rows = _rows(run)
        assert [r["step"] for r in rows] == [1, 2, 3, 4]
        for row in rows[2:]:
            assert row["loss"] == pytest.approx(first[row["step"]]["loss"], rel=1e-4)
        assert _step(ckpts / "epoch_2.pt") == 4
    else:  # resumed from epoch_2.pt: nothing left to train, nothing rewritten, latest.pt repaired
        assert (ckpts / "epoch_2.pt").stat().st_mtime_ns == epoch_2
        assert (run / "metrics.jsonl").read_bytes() == metrics
        assert os.path.samefile(ckpts / "latest.pt", ckpts / "epoch_2.pt")


def test_stale_temp_files_are_removed_at_start_up(run):
    ckpts = run / "checkpoints"
    stale = [
        ckpts / ".epoch_3.pt.48213.tmp",  # older versions put the PID in the name and never removed them
        ckpts / ".latest.pt.48213.tmp",
        ckpts / ".epoch_3.pt.tmp",
        ckpts / ".latest.pt.tmp",
        run / ".metrics.jsonl.tmp",
    ]
    others = [ckpts / "notes.tmp", run / ".cache.tmp", ckpts / "epoch_3.pt.tmp"]  # not the trainer's names
    for path in stale + others:
        path.write_bytes(os.urandom(1000))
    assert main(_train(run, "--resume", str(ckpts / "latest.pt"))) == 0  # nothing to train; start-up cleans
    assert [p.name for p in stale if p.exists()] == []
    assert all(p.exists() for p in others)


def test_a_stale_temp_link_never_overwrites_the_checkpoint_it_points_to(tmp_path):
    """latest.pt is made as a hard link under its temporary name: a kill before the rename leaves that link,
    and the next save under the same temporary name must not write through it into the epoch file."""
    epoch_file = tmp_path / "epoch_2.pt"
    epoch_file.write_bytes(b"complete checkpoint")
    os.link(epoch_file, run_dir.temp_path(tmp_path / "latest.pt"))
    run_dir.fresh_temp_path(tmp_path / "latest.pt").write_bytes(b"another checkpoint")
    assert epoch_file.read_bytes() == b"complete checkpoint"


def test_torn_last_metrics_line_is_dropped_on_resume(run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "epoch": 3, "lo')  # killed while appending step 5
    assert main(_train(run, "--resume", str(run / "checkpoints" / "latest.pt"), "--epochs", "3")) == 0
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4, 5, 6]


def test_kill_between_epoch_file_and_latest_resumes_from_the_epoch_file(tmp_path, monkeypatch):
    class Killed(BaseException):
        pass

    def crash_point(phase, name):
        if (phase, name) == ("before_latest", "epoch_2.pt"):
            raise Killed  # nothing after this point runs, as with SIGKILL

    out = tmp_path / "run"
    monkeypatch.setattr(run_dir, "crash_point", crash_point)
    with pytest.raises(Killed):
        main(_train(out))
    monkeypatch.undo()
    ckpts = out / "checkpoints"
    assert _step(ckpts / "epoch_2.pt") == 4 and _step(ckpts / "latest.pt") == 2  # latest.pt one epoch behind

    assert main(_train(out, "--resume", "auto")) == 0  # nothing left to train
    assert _step(ckpts / "latest.pt") == 4 and os.path.samefile(ckpts / "latest.pt", ckpts / "epoch_2.pt")
    assert [r["step"] for r in _rows(out)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_killed_process_leaves_a_temp_file_that_the_next_start_removes(tmp_path):
    """A real kill (os._exit in a subprocess) after the epoch-2 file is written under its temporary name."""
    out = tmp_path / "run"
    env = {**os.environ, run_dir.CRASH_ENV: "before_rename:epoch_2.pt"}
    proc = subprocess.run(
        [sys.executable, "-m", "reference_trainer.main", *_train(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == run_dir.CRASH_EXIT_STATUS, proc.stderr
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".epoch_2.pt.tmp", "epoch_1.pt", "latest.pt"]
    assert _step(ckpts / "latest.pt") == 2 and [r["step"] for r in _rows(out)] == [1, 2, 3, 4]

    assert main(_train(out, "--resume", "auto")) == 0  # removes the temp file, trains epoch 2 again
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_1.pt", "epoch_2.pt", "latest.pt"]
    assert _step(ckpts / "latest.pt") == 4 and [r["step"] for r in _rows(out)] == [1, 2, 3, 4]


def test_generate_from_a_missing_latest_uses_the_newest_complete_checkpoint(run, tmp_path):
    (run / "checkpoints" / "latest.pt").unlink()
    samples = tmp_path / "samples"
    args = ["generate", "--checkpoint", str(run / "checkpoints" / "latest.pt"), "--prompt", "HI", "--steps", "2"]
    assert main(args + ["--out", str(samples), "--device", "cpu"]) == 0
    assert len(list(samples.glob("*.gif"))) == 1
