"""Safety of a training run's output folder: one run per folder, crash-consistent checkpoints.

``train --out OUT`` writes::

    OUT/checkpoints/epoch_<N>.pt   every save_every_epochs epochs and after the last epoch
    OUT/checkpoints/latest.pt      after every epoch: a hard link to that epoch's epoch_<N>.pt (a copy
                                   where the file system has no hard links), else a file of its own
    OUT/metrics.jsonl              one line per optimizer step, appended
    OUT/tensorboard/               event files

What this module guarantees (docs/reliability.md, "Training runs and checkpoints"):

- a checkpoint is written as ``.<name>.tmp`` beside its name, flushed to disk, then renamed over the
  name: a checkpoint name never holds a partial file;
- ``latest.pt`` is replaced by a rename right after the epoch file; a kill between the two renames
  leaves it one epoch behind, which the next start sees: resuming takes the newest complete
  checkpoint (by step, each one checked to load) and points ``latest.pt`` at it again;
- temporary files a killed run left behind are removed when the next run starts;
- ``train`` refuses an output folder that holds another run unless given ``--resume`` or
  ``--overwrite``, and changes nothing in it when it refuses;
- ``metrics.jsonl`` is only appended to; on resume, the lines past the checkpoint's step (steps
  that will be trained again) are dropped by writing the kept lines to a temporary file and
  renaming it over the old one.

``T2S_TRAINER_CRASH_AT=PHASE:NAME`` is a test hook: the process ends at once (``os._exit``, no
clean-up, like SIGKILL) at that point of a save: ``before_rename:<file>`` (its temporary file is
complete, not yet renamed) or ``before_latest:<epoch file>`` (the epoch file is in place,
``latest.pt`` not yet updated).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest.pt"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
LOCK = ".train.lock"
AUTO = "auto"
CRASH_ENV = "T2S_TRAINER_CRASH_AT"
CRASH_EXIT_STATUS = 137  # what a shell reports for SIGKILL

_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")
# Temporary files of this trainer: ".<name>.tmp"; older versions put the PID in: ".<name>.<pid>.tmp".
_TEMP_FILE = re.compile(r"\.(?:latest\.pt|epoch_\d+\.pt|metrics\.jsonl)(?:\.\d+)?\.tmp")
_TRASH = ".old-run.tmp"  # the previous run while --overwrite deletes it


class RunDirError(RuntimeError):
    """An output folder or a --resume/--overwrite request the trainer will not act on; the message says why
    and what to do instead."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    global_step: int
    epoch: int

    def describe(self) -> str:
        return f"{self.path} (step {self.global_step}, epoch {self.epoch})"


# ---------------------------------------------------------------------------- writing


def temp_path(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed to ``path``; a fixed name, so the
    next start can recognise and remove one a killed run left behind."""
    return path.with_name(f".{path.name}.tmp")


def fresh_temp_path(path: Path) -> Path:
    """``temp_path(path)`` with any file a killed run left under it removed first: it may be a hard link to
    a checkpoint (see ``update_latest``), which writing into it in place would destroy."""
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)
    return tmp


def crash_point(phase: str, name: str) -> None:
    """Test hook (see the module docstring): end the process here when ``T2S_TRAINER_CRASH_AT=PHASE:NAME``."""
    if os.environ.get(CRASH_ENV) == f"{phase}:{name}":
        os._exit(CRASH_EXIT_STATUS)


def commit(tmp: Path, path: Path) -> None:
    """Make the complete file ``tmp`` the file ``path``: flushed to disk first, then renamed over it (atomic)."""
    _fsync(tmp)
    crash_point("before_rename", path.name)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def update_latest(checkpoint: Path, latest: Path) -> None:
    """Point ``latest`` at the complete ``checkpoint``: a hard link (or a copy) made under the temporary name,
    then renamed over ``latest``, which is never missing nor partial."""
    crash_point("before_latest", checkpoint.name)
    tmp = fresh_temp_path(latest)
    try:
        try:
            os.link(checkpoint, tmp)
        except OSError:  # no hard links on this file system (FAT, some network shares): copy the bytes
            shutil.copyfile(checkpoint, tmp)
            _fsync(tmp)
        os.replace(tmp, latest)
        _fsync_dir(latest.parent)
    finally:
        tmp.unlink(missing_ok=True)


def drop_metrics_after(path: Path, step: int) -> int:
    """Keep the metrics lines of steps up to ``step``; a line that does not parse (the torn last line of a
    killed run) goes too. Rewritten through a temporary file and a rename, and only when a line goes.
    Returns how many lines were dropped."""
    if not path.exists():
        return 0
    text = path.read_text()
    kept, dropped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            line_step = json.loads(line)["step"]
        except (ValueError, TypeError, KeyError):
            line_step = None
        if isinstance(line_step, int) and line_step <= step:
            kept.append(line + "\n")
        else:
            dropped += 1
    new_text = "".join(kept)
    if new_text != text:
        tmp = fresh_temp_path(path)
        try:
            with open(tmp, "w") as f:
                f.write(new_text)
            commit(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if dropped:
        logger.info("%s: dropped %d line(s) past step %d (they are trained again)", path, dropped, step)
    return dropped


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- reading


def inspect_checkpoint(path: Path) -> Tuple[Optional[CheckpointInfo], str]:
    """``(info, "")`` for a complete checkpoint of this trainer, else ``(None, why not)``. Memory-mapped: the
    weights are not read."""
    from .trainer import CHECKPOINT_KEYS  # trainer imports this module

    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        return None, "missing"
    except Exception as exc:  # a partial zip, a pickle error, not a torch file at all
        return None, f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if not isinstance(data, dict):
        return None, "not a reference_trainer checkpoint"
    missing = [key for key in CHECKPOINT_KEYS if key not in data]
    if missing:
        return None, f"not a reference_trainer checkpoint (no {', '.join(missing)})"
    return CheckpointInfo(path, int(data["global_step"]), int(data["epoch"])), ""


def checkpoint_files(checkpoint_dir: Path) -> List[Path]:
    """``latest.pt`` and the ``epoch_<N>.pt`` files in ``checkpoint_dir`` (never temporary files)."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted(p for p in checkpoint_dir.iterdir() if p.name == LATEST or _EPOCH_FILE.fullmatch(p.name))


def scan_checkpoints(checkpoint_dir: Path) -> Tuple[List[CheckpointInfo], List[Tuple[Path, str]]]:
    """The complete checkpoints, newest first (by step; latest.pt first among equals), and the others with why."""
    complete, broken = [], []
    for path in checkpoint_files(checkpoint_dir):
        info, why = inspect_checkpoint(path)
        if info is None:
            broken.append((path, why))
        else:
            complete.append(info)
    complete.sort(key=lambda c: (c.global_step, c.epoch, c.path.name == LATEST), reverse=True)
    return complete, broken


def resolve_latest(path: Path) -> Path:
    """``DIR/latest.pt`` stands for the newest complete checkpoint in DIR (latest.pt itself unless a kill left
    it missing, partial or behind an epoch file); any other path is returned as it is."""
    if path.name != LATEST or not path.parent.is_dir():
        return path
    complete, broken = scan_checkpoints(path.parent)
    if not complete:
        return path
    newest = complete[0]
    if newest.path.name != LATEST:
        state = dict(broken).get(path, "missing" if not path.exists() else "behind")
        logger.warning("%s is %s; using the newest complete checkpoint, %s", path, state, newest.describe())
    return newest.path


def last_metrics_step(path: Path) -> Optional[int]:
    """Step of the last readable line of metrics.jsonl, None when it has none."""
    if not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            step = json.loads(line)["step"]
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(step, int):
            return step
    return None


@dataclass
class PreviousRun:
    """What a run left in an output folder."""

    out: Path
    complete: List[CheckpointInfo]  # newest first
    broken: List[Tuple[Path, str]]
    metrics_step: Optional[int]

    @property
    def newest(self) -> Optional[CheckpointInfo]:
        return self.complete[0] if self.complete else None

    def describe(self) -> str:
        parts = []
        if self.newest is not None:
            parts.append(f"last complete checkpoint {self.newest.describe()}")
        elif self.broken:
            parts.append("no complete checkpoint (" + ", ".join(f"{p.name}: {why}" for p, why in self.broken) + ")")
        else:
            parts.append("no checkpoint yet")
        if self.metrics_step is not None:
            parts.append(f"{METRICS} up to step {self.metrics_step}")
        return "; ".join(parts)


def find_previous_run(out: Path) -> Optional[PreviousRun]:
    """The run in ``out``: checkpoint files or metrics lines; None for a new or empty folder."""
    files = checkpoint_files(out / CHECKPOINTS)
    metrics = out / METRICS
    if not files and not (metrics.exists() and metrics.read_text().strip()):
        return None
    complete, broken = scan_checkpoints(out / CHECKPOINTS)
    return PreviousRun(out, complete, broken, last_metrics_step(metrics))


# ---------------------------------------------------------------------------- start-up


def is_auto(resume: Optional[Path]) -> bool:
    return resume is not None and str(resume) == AUTO


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


def check_request(out: Path, resume: Optional[Path], overwrite: bool) -> None:
    """The --resume/--overwrite errors that need no look at the run (nothing is created before they pass)."""
    if resume is not None and not is_auto(resume) and not resume.is_file():
        if resume.name != LATEST or not checkpoint_files(resume.parent):
            raise RunDirError(f"checkpoint not found: {resume}")
    if overwrite and resume is not None and (is_auto(resume) or _inside(resume, out / CHECKPOINTS)):
        raise RunDirError(
            f"--overwrite deletes the run in {out}, the run --resume {resume} continues; give one of them"
        )


@contextlib.contextmanager
def lock(out: Path) -> Iterator[None]:
    """Hold ``out/.train.lock`` for the whole command: a second trainer on the same folder is refused, so no
    one removes the temporary files of a live run. (No lock where fcntl is missing, as on Windows.)"""
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(out / LOCK, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            raise RunDirError(
                f"{out} is in use by another training process{f' (pid {holder})' if holder else ''}; "
                "wait for it to end or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def remove_stale_temp_files(out: Path) -> List[Path]:
    """Remove what a killed run left: the trainer's temporary files (PID-named ones of older versions too) and a
    half-deleted previous run. Call under ``lock``."""
    removed = []
    for folder in (out, out / CHECKPOINTS):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if _TEMP_FILE.fullmatch(path.name) and path.is_file():
                size = path.stat().st_size
                path.unlink()
                removed.append(path)
                logger.info("removed %s (%.1f MB), left by an interrupted run", path, size / 1e6)
    trash = out / _TRASH
    if trash.exists():
        shutil.rmtree(trash)
        removed.append(trash)
    return removed


def _remove_run(out: Path) -> None:
    """Delete the previous run's checkpoints, metrics and event files (moved aside first, so that a kill
    half-way leaves no half run under the real names)."""
    trash = out / _TRASH
    if trash.exists():
        shutil.rmtree(trash)
    trash.mkdir()
    for name in (CHECKPOINTS, METRICS, TENSORBOARD):
        if (out / name).exists():
            os.replace(out / name, trash / name)
    shutil.rmtree(trash)


def prepare(out: Path, resume: Optional[Path], overwrite: bool, num_epochs: int) -> Optional[Path]:
    """Decide what a ``train`` command does with ``out`` before anything is written there; returns the
    checkpoint to load, None for a new run. Call under ``lock``, after ``check_request``.

    - ``out`` holds a run, and neither --resume nor --overwrite: RunDirError, nothing changed;
    - --overwrite: the run's checkpoints, metrics.jsonl and tensorboard/ are deleted first;
    - --resume auto, or --resume OUT/checkpoints/latest.pt: the newest complete checkpoint of ``out``
      (auto: a new run when there is none yet), and latest.pt is pointed at it again if a kill left it
      missing or behind; a foreign checkpoint into a folder holding a run: RunDirError.
    Then the temporary files of killed runs are removed.
    """
    previous = find_previous_run(out)
    if previous is not None and not overwrite:
        if resume is None:
            raise RunDirError(_refusal(out, previous, num_epochs))
        if not is_auto(resume) and not _inside(resume, out / CHECKPOINTS):
            raise RunDirError(
                f"{out} already holds another training run ({previous.describe()}); resuming {resume} there "
                "would mix the two. Choose another --out, or add --overwrite to delete that run first."
            )
    if previous is not None and overwrite:
        logger.warning("--overwrite: deleting the run in %s (%s)", out, previous.describe())
        _remove_run(out)
        previous = None
    remove_stale_temp_files(out)

    if resume is None:
        return None
    checkpoint_dir = out / CHECKPOINTS if is_auto(resume) else resume.parent
    if not is_auto(resume) and resume.name != LATEST:
        _warn_if_rewinding(resume, previous)
        return resume
    complete, broken = scan_checkpoints(checkpoint_dir)
    if not complete:
        if broken:
            raise RunDirError(
                f"no complete checkpoint in {checkpoint_dir}: "
                + ", ".join(f"{p.name} {why}" for p, why in broken)
                + "; resume from another checkpoint, or start over with --overwrite"
            )
        if not is_auto(resume):
            raise RunDirError(f"checkpoint not found: {resume}")
        if previous is not None:
            logger.warning("%s: no checkpoint yet (%s); starting the run over from step 0", out, previous.describe())
        return None
    newest = complete[0]
    latest = checkpoint_dir / LATEST
    if newest.path != latest:
        state = dict(broken).get(latest, "missing" if not latest.exists() else "behind")
        logger.warning("%s is %s; resuming from the newest complete checkpoint, %s", latest, state, newest.describe())
        if checkpoint_dir.resolve() == (out / CHECKPOINTS).resolve():
            update_latest(newest.path, latest)
    logger.info("resuming from %s", newest.describe())
    return newest.path


def _warn_if_rewinding(resume: Path, previous: Optional[PreviousRun]) -> None:
    if previous is None or previous.newest is None or not _inside(resume, previous.out / CHECKPOINTS):
        return
    info, _ = inspect_checkpoint(resume)
    if info is not None and info.global_step < previous.newest.global_step:
        logger.warning(
            "resuming from step %d although %s reaches step %d: later metrics lines are dropped and later "
            "checkpoints are overwritten as training passes them",
            info.global_step,
            previous.out,
            previous.newest.global_step,
        )


def _refusal(out: Path, previous: PreviousRun, num_epochs: int) -> str:
    lines = [f"{out} already holds a training run: {previous.describe()}."]
    lines.append("Starting a new run there would overwrite its checkpoints and metrics, so nothing was changed.")
    newest = previous.newest
    if newest is not None:
        more = (
            f"; it has done all {newest.epoch} epochs, add --epochs N (N > {newest.epoch}) to train longer"
            if newest.epoch >= num_epochs
            else ""
        )
        lines.append(
            f"To continue it: --resume auto (or --resume {out / CHECKPOINTS / LATEST}), which starts from "
            f"step {newest.global_step}{more}."
        )
    elif not previous.broken:
        lines.append("To start it over from step 0: --resume auto.")
    lines.append(
        "To replace it: --overwrite (deletes its checkpoints, metrics and TensorBoard files). Or choose another --out."
    )
    return "\n".join(lines)
