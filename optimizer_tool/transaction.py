"""Writing a set of files all or nothing, also across Ctrl-C and crashes: the transaction of ``apply``.

``commit(changes, originals)`` takes the new bytes of each file and the exact bytes the changes were
computed from. On disk, in this order (every file fsynced when written, its folder after a rename):

1. the journal ``.t2s-opt-journal.json`` in the targets' common folder, state ``prepared``: every
   target (relative to that folder) with the sha256 of its original and of its new bytes and the
   names of its two temporary files, and the writer's pid. It is created exclusively (hard link of
   a fsynced temporary file), so a second apply writing in the same folder is refused, and it is
   written before any temporary file, so every temporary file on disk belongs to a journal;
2. beside each target, ``.NAME.t2s-opt.orig`` (the original bytes: the backup) and
   ``.NAME.t2s-opt.new`` (the new bytes), both with the target's permission bits;
3. per target: its bytes are read again and their hash compared with the original's, then
   ``os.replace`` moves the new file into place (atomic per file). A target edited, deleted or
   unreadable since the changes were computed stops the apply: the files already replaced get
   their backups back, and ``TransactionError`` names the file. (Between that last read and the
   rename there are microseconds; without locks nothing can close them.)
4. the journal becomes ``committed`` (the commit point); the temporary files and the journal go.

SIGINT and SIGTERM are deferred while ``commit`` runs (a handler records them) and acted on at the
next phase boundary: before the commit point the transaction rolls back (every replaced file gets
its original bytes) and raises ``Interrupted`` saying so; after it, the apply finishes and
``Interrupted`` says that every file was written.

A process killed on the way (SIGKILL, power loss) leaves the journal behind. ``recover`` (run by
``apply`` and ``check`` on the folders they are pointed at) rolls a ``prepared`` journal back -- a
target holding the new bytes gets its backup; one holding neither the original nor the new bytes
is left alone and reported, its original kept as ``NAME.t2s-opt-original`` -- finishes the clean-up
of a ``committed`` one, and removes stray temporary files (also the ``.t2s-opt.tmp`` files of
earlier versions). A journal whose writer still runs is left alone.

Test hook: ``T2S_OPT_TEST_KILL_AT=PHASE`` kills the process with SIGKILL at a phase boundary;
``T2S_OPT_TEST_PAUSE_AT=PHASE`` with ``T2S_OPT_TEST_PAUSE_GATE=FILE`` creates ``FILE.paused`` there
and waits (60 s at most) until ``FILE`` exists. The phases: ``journal`` (journal written),
``temps`` (temporary files written), ``rename:N`` (before target N is re-read and replaced, counted
from 1), ``renamed:N`` (after), ``committed`` (journal committed, temporary files still there).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Iterator, Mapping

JOURNAL = ".t2s-opt-journal.json"
NEW = ".t2s-opt.new"
ORIG = ".t2s-opt.orig"
TMP = ".t2s-opt.tmp"  # the journal's own temporary file; also what earlier versions left behind
KEPT = ".t2s-opt-original"  # an original that recovery could not put back, kept visible beside its file
KILL_AT = "T2S_OPT_TEST_KILL_AT"
PAUSE_AT = "T2S_OPT_TEST_PAUSE_AT"
PAUSE_GATE = "T2S_OPT_TEST_PAUSE_GATE"


class TransactionError(Exception):
    """Writing was refused or failed; the message names the file and says what is on disk."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while ``commit`` wrote; the message says whether it rolled back or finished."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.message, self.signum = message, signum

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class _Entry:
    target: Path
    original: str  # sha256 of the bytes the changes were computed from
    new: str  # sha256 of the bytes to write

    @property
    def temp(self) -> Path:
        return self.target.with_name(f".{self.target.name}{NEW}")

    @property
    def backup(self) -> Path:
        return self.target.with_name(f".{self.target.name}{ORIG}")


# --- commit ---------------------------------------------------------------------------------------
def commit(changes: Mapping[Path, bytes], originals: Mapping[Path, bytes]) -> None:
    """Write every file of ``changes`` or none (phases in the module's docstring). ``originals``
    holds, for each, the bytes the changes were computed from. Raises ``TransactionError`` (a
    target changed on disk, a write failed: nothing written) or ``Interrupted``."""
    if not changes:
        return
    entries = [_Entry(Path(os.path.abspath(p)), _sha(originals[p]), _sha(data)) for p, data in changes.items()]
    content = {e.target: (originals[p], changes[p]) for e, p in zip(entries, changes)}
    for entry in entries:
        _verify(entry, "while the fixes were computed")
    journal = Path(os.path.commonpath([str(e.target.parent) for e in entries])) / JOURNAL
    with _signals_deferred() as caught:
        _put_journal(journal, _journal_data(journal.parent, entries, "prepared"), create=True)
        _checkpoint("journal")
        replaced: list[_Entry] = []
        try:
            _prepare(entries, content, caught)
            _replace_all(entries, replaced, caught)
            _put_journal(journal, _journal_data(journal.parent, entries, "committed"), create=False)
        except BaseException as exc:
            _undo(entries, replaced, journal, exc)
            raise
        _checkpoint("committed")
        _remove(entries, journal)
    if caught:
        name = _signal_name(caught[0])
        raise Interrupted(f"interrupted ({name}) after every file was written: the apply finished", caught[0])


def _prepare(entries: list[_Entry], content: dict[Path, tuple[bytes, bytes]], caught: list[int]) -> None:
    """Phase 2: the backup and the new bytes beside each target, fsynced, with the target's mode."""
    for entry in entries:
        original, new = content[entry.target]
        mode = _mode(entry.target)
        _write_file(entry.backup, original, mode)
        _write_file(entry.temp, new, mode)
        _stop_if_signalled(caught, entries, [])
    _sync_folders(entries)
    _checkpoint("temps")


def _replace_all(entries: list[_Entry], replaced: list[_Entry], caught: list[int]) -> None:
    """Phase 3: each target re-read and compared with the original's hash, then replaced."""
    for number, entry in enumerate(entries, 1):
        _checkpoint(f"rename:{number}")
        _stop_if_signalled(caught, entries, replaced)
        _verify(entry, "while apply was writing")
        os.replace(entry.temp, entry.target)
        replaced.append(entry)
        _checkpoint(f"renamed:{number}")
    _stop_if_signalled(caught, entries, replaced)
    _sync_folders(entries)


def _verify(entry: _Entry, when: str) -> None:
    try:
        data = entry.target.read_bytes()
    except FileNotFoundError:
        why = "it was deleted"
    except OSError as exc:
        why = f"it cannot be read: {exc.strerror or exc}"
    else:
        if _sha(data) == entry.original:
            return
        why = "its content differs"
    raise TransactionError(f"{entry.target} changed on disk {when} ({why}); nothing was written, run apply again")


def _stop_if_signalled(caught: list[int], entries: list[_Entry], replaced: list[_Entry]) -> None:
    if caught:
        done = f"rolled back the {len(replaced)} file(s) already replaced" if replaced else "no file had been replaced"
        message = f"interrupted ({_signal_name(caught[0])}) while writing {len(entries)} file(s): {done}"
        raise Interrupted(message + "; nothing was written", caught[0])


def _undo(entries: list[_Entry], replaced: list[_Entry], journal: Path, exc: BaseException) -> None:
    """Give the replaced files their originals back and remove the temporary files and the journal.
    Files that cannot be restored are reported and stay in the journal, for ``recover``."""
    problems: dict[_Entry, str] = {}
    for entry in reversed(replaced):
        try:
            problem = _restore(entry)[1]
        except OSError as err:
            problem = str(err.strerror or err)
        if problem:
            problems[entry] = f"{entry.target}: {problem}"
    if problems:
        try:  # the journal names only what is left to repair
            _put_journal(journal, _journal_data(journal.parent, list(problems), "prepared"), create=False)
            _remove([e for e in entries if e not in problems], None)
        except TransactionError:
            pass
        why = "; ".join(problems.values())
        raise TransactionError(
            f"writing failed ({exc}) and the roll-back failed too: {why}; the journal {journal} stays, "
            "so that the next t2s-opt apply or check restores what it can and reports the rest"
        ) from exc
    _remove(entries, journal)
    if isinstance(exc, OSError):
        raise TransactionError(
            f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; no file was changed"
        ) from exc


def _restore(entry: _Entry) -> tuple[bool, str | None]:
    """Put the original back where the target holds the new bytes: (restored?, why it could not)."""
    current = _digest(entry.target)
    if current == entry.original:
        return False, None
    if current != entry.new:
        return False, "it matches neither its original nor the new content"
    if _digest(entry.backup) != entry.original:
        return False, f"it has the new content, but its backup {entry.backup.name} is missing or damaged"
    os.replace(entry.backup, entry.target)
    return True, None


def _remove(entries: list[_Entry], journal: Path | None) -> None:
    """The temporary files, then the journal: until it is gone, ``recover`` can still find them."""
    for entry in entries:
        _unlink(entry.temp)
        _unlink(entry.backup)
    _sync_folders(entries)
    if journal is not None:
        _unlink(journal)
        _sync_folder(journal.parent)


# --- the journal and durable files ----------------------------------------------------------------
def _journal_data(folder: Path, entries: list[_Entry], state: str) -> bytes:
    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, folder)).as_posix()

    files = [
        {"target": rel(e.target), "original_sha256": e.original, "new_sha256": e.new}
        | {"temp": rel(e.temp), "backup": rel(e.backup)}
        for e in entries
    ]
    data = {"tool": "t2s-opt apply", "version": 1, "state": state, "pid": os.getpid()}
    data |= {"started": _started(os.getpid()), "files": files}
    return json.dumps(data, indent=1).encode("utf-8")


def _read_journal(journal: Path) -> tuple[dict, list[_Entry]]:
    data = json.loads(journal.read_bytes())
    entries = [_Entry(journal.parent / f["target"], f["original_sha256"], f["new_sha256"]) for f in data["files"]]
    return data, entries


def _journal_temp(journal: Path, pid: int) -> Path:
    return journal.with_name(f"{journal.name}.{pid}{TMP}")


def _put_journal(journal: Path, data: bytes, create: bool) -> None:
    """Write the journal through a fsynced temporary file: replaced, or (``create``) hard-linked,
    which fails when a journal is there already."""
    temp = _journal_temp(journal, os.getpid())
    try:
        _write_file(temp, data)
        if not create:
            os.replace(temp, journal)
        else:
            _link_new(temp, journal)
    except OSError as exc:
        message = f"cannot write {exc.filename or journal}: {exc.strerror or exc}; no file was changed"
        raise TransactionError(message) from exc
    finally:
        _unlink(temp)
    _sync_folder(journal.parent)


def _link_new(temp: Path, journal: Path) -> None:
    busy = TransactionError(
        f"{journal} exists: another t2s-opt apply is writing in {journal.parent}, or one was interrupted there "
        "(the next apply or check rolls it back); nothing was written"
    )
    try:
        os.link(temp, journal)
    except FileExistsError:
        raise busy from None
    except OSError:  # a file system without hard links
        if journal.exists():
            raise busy from None
        os.replace(temp, journal)


def _write_file(path: Path, data: bytes, mode: int | None = None) -> None:
    _unlink(path)  # a stale one may be read-only, or a link
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        if mode is not None:
            os.chmod(path, mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_folders(entries: list[_Entry]) -> None:
    for folder in dict.fromkeys(e.target.parent for e in entries):
        _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that the renames in it survive a power loss (where the system allows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- recovery -------------------------------------------------------------------------------------
def recover_targets(paths: Iterable[Path], skip_dirs: Collection[str] = ()) -> list[str]:
    """``recover`` for the folders of what a command is pointed at (a file: its folder), each once;
    one line per folder where something was done."""
    folders = [Path(os.path.abspath(p if p.is_dir() else p.parent)) for p in paths]
    tops = [f for f in dict.fromkeys(folders) if not any(other in f.parents for other in folders)]
    return [line for folder in tops if (line := recover(folder, skip_dirs))]


def recover(folder: Path, skip_dirs: Collection[str] = ()) -> str | None:
    """Finish what an interrupted ``commit`` left in ``folder`` (its subfolders, except hidden ones
    and ``skip_dirs``) and in the folders above it: roll back a journal in state ``prepared``, clean
    up after a ``committed`` one, remove stray temporary files. One line saying what was done, or
    None when nothing was left."""
    folder = Path(os.path.abspath(folder))
    if not folder.is_dir():
        return None
    journals, strays = _leftovers(folder, set(skip_dirs))
    said: list[str] = []
    keep: set[Path] = set()
    for journal in journals:
        try:
            line, kept = _recover_journal(journal)
        except OSError as exc:
            line, kept = f"cannot finish the roll-back of {journal}: {exc.strerror or exc}", {journal.parent}
        said.append(line)
        keep |= kept
    removed = [p for p in strays if not ({p, *p.parents} & keep) and p.exists() and _unlink(p)]
    if removed:
        said.append(f"removed {len(removed)} leftover temporary file(s) of an interrupted apply in {folder}")
    return "; ".join(said) or None


def _leftovers(folder: Path, skip: set[str]) -> tuple[list[Path], list[Path]]:
    journals = [up / JOURNAL for up in folder.parents if (up / JOURNAL).is_file()]
    strays: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        for name in sorted(files):
            if name == JOURNAL:
                journals.append(Path(root, name))
            elif name.startswith(".") and name.endswith((NEW, ORIG, TMP)):
                strays.append(Path(root, name))
    return journals, strays


def _recover_journal(journal: Path) -> tuple[str, set[Path]]:
    """(what was done, the paths whose temporary files must stay) for one journal."""
    try:
        data, entries = _read_journal(journal)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"cannot read {journal} ({exc}): left as it is, with the temporary files beside it"
        return why + "; check the files it names and remove it by hand", {journal.parent}
    pid, where = data.get("pid"), journal.parent
    if _alive(pid, data.get("started")):
        kept = {p for e in entries for p in (e.temp, e.backup)} | {journal, _journal_temp(journal, pid)}
        return f"an apply (pid {pid}) is writing in {where}: left its files alone", kept
    if data.get("state") == "committed":
        _remove(entries, journal)
        line = f"finished an apply interrupted in {where} after writing its {len(entries)} file(s): removed its journal"
        return line, set()
    restored, problems = [], []
    for entry in entries:
        done, problem = _restore(entry)
        restored += [entry] if done else []
        problems += [_keep_original(entry, problem, where)] if problem else []
    _sync_folders(entries)
    _remove(entries, journal)
    names = ", ".join(Path(os.path.relpath(e.target, where)).as_posix() for e in restored)
    done = (
        f"restored {names} ({len(restored)} of {len(entries)} file(s) had been replaced)"
        if restored
        else "no file had been replaced"
    )
    return f"rolled back an apply interrupted in {where}: {'; '.join([done, *problems])}", set()


def _keep_original(entry: _Entry, problem: str, where: Path) -> str:
    """A target ``recover`` cannot restore stays as it is; its backup, if good, becomes visible."""
    name = Path(os.path.relpath(entry.target, where)).as_posix()
    if _digest(entry.backup) != entry.original:
        return f"left {name} as it is ({problem})"
    kept = entry.target.with_name(entry.target.name + KEPT)
    os.replace(entry.backup, kept)
    return f"left {name} as it is ({problem}; its original is kept in {name}{KEPT})"


def _alive(pid: object, started: object) -> bool:
    """Whether the process that wrote a journal still runs (pid, and start time where /proc has it)."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid() or os.name == "nt":
        return False  # on Windows os.kill(pid, 0) would terminate the process
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # another user's process
    except OSError:
        return False
    now = _started(pid)
    return started is None or now is None or now == started


def _started(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot, /proc/PID/stat field 22), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


# --- small helpers --------------------------------------------------------------------------------
@contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """SIGINT and SIGTERM only recorded (in the list yielded) while the block runs (main thread only)."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    wanted = [signal.SIGINT, *([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])]
    before = {sig: signal.getsignal(sig) for sig in wanted}
    for sig in wanted:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _checkpoint(phase: str) -> None:
    """The test hook (module docstring): kill or pause at a phase boundary."""
    if os.environ.get(KILL_AT) == phase:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    if os.environ.get(PAUSE_AT) == phase:
        gate = Path(os.environ[PAUSE_GATE])
        Path(f"{gate}.paused").touch()
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(path: Path) -> str | None:
    try:
        return _sha(path.read_bytes())
    except OSError:
        return None


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # deleted: the check before its rename says so


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True
