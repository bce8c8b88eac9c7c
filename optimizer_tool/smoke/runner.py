"""Running trainer processes under the probe: own session (process group), deadline, clean stop.

Every run starts with ``start_new_session=True``, so the trainer, its DataLoader workers and
anything it spawns share one process group that is not the terminal's: Ctrl-C reaches only
``t2s-opt``, which then stops the whole group (SIGTERM, a grace period, SIGKILL) and still writes
the partial report. The same happens at the deadline (``--timeout``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from optimizer_tool.smoke import probe as probe_module

GRACE_S = 5.0
POLL_S = 0.2

SITECUSTOMIZE = """\
# Written by t2s-opt smoke-test: loads the step probe into every Python process of the run.
import importlib.util as _util
import sys as _sys

_spec = _util.spec_from_file_location("_t2s_smoke_probe", {probe_path!r})
_probe = _util.module_from_spec(_spec)
_sys.modules["_t2s_smoke_probe"] = _probe
_spec.loader.exec_module(_probe)
_probe.activate_from_env()

# This file shadows any sitecustomize further down the path; run that one too.
_here = {site_dir!r}
_next = __import__("importlib.machinery").machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in _sys.path if p and __import__("os").path.abspath(p) != _here]
)
if _next is not None and _next.loader is not None:
    _next.loader.exec_module(_util.module_from_spec(_next))
"""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM while runs were in flight; the runs are already stopped."""


@dataclass
class RunSpec:
    name: str  # "train", "resume", "sample"
    argv: List[str]
    cwd: Path
    dir: Path  # logs and the probe file go here
    env: Dict[str, str] = field(default_factory=dict)
    expected_steps: Optional[int] = None  # for the progress bar

    @property
    def probe_path(self) -> Path:
        return self.dir / "probe.jsonl"


@dataclass
class RunResult:
    name: str
    argv: List[str]
    cwd: str
    returncode: Optional[int] = None
    wall_s: float = 0.0
    timed_out: bool = False
    interrupted: bool = False
    start_error: Optional[str] = None
    pgid: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    probe: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not (self.timed_out or self.interrupted or self.start_error)

    def stderr_tail(self, lines: int = 12) -> str:
        try:
            text = Path(self.stderr).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def describe(self) -> str:
        if self.start_error:
            return f"could not start: {self.start_error}"
        if self.timed_out:
            return f"timed out after {self.wall_s:.1f} s; process group {self.pgid} stopped"
        if self.interrupted:
            return f"interrupted after {self.wall_s:.1f} s; process group {self.pgid} stopped"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode}"


def write_sitecustomize(site_dir: Path) -> Path:
    """The folder to put first on PYTHONPATH; it holds a sitecustomize.py that loads probe.py."""
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(probe_path=str(Path(probe_module.__file__).resolve()), site_dir=str(site_dir.resolve())),
        encoding="utf-8",
    )
    return site_dir


def probe_env(site_dir: Path, probe_path: Path, extra: Dict[str, str]) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    # PYTHONPATH is set by the caller's extra entries (e.g. the trainer's root) first, then the site dir.
    parts = [str(site_dir.resolve())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env[probe_module.ENV_LOG] = str(probe_path.resolve())
    env.setdefault("PYTHONUNBUFFERED", "1")  # so the log files show progress as it happens
    return env


def _stop_group(proc: subprocess.Popen, pgid: int) -> None:
    """SIGTERM to the whole group, then SIGKILL to whatever is left after the grace period."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    # The leader if it ignored SIGTERM, and in any case its children: they still belong to the group.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class _Live:
    def __init__(self, spec: RunSpec, proc: subprocess.Popen, result: RunResult, files: list, start: float):
        self.spec, self.proc, self.result, self.files, self.start = spec, proc, result, files, start
        self.offset = 0
        self.end: Optional[float] = None

    def ended(self) -> bool:
        """Whether the process has exited; notes when, for its wall time."""
        if self.proc.poll() is None:
            return False
        if self.end is None:
            self.end = time.monotonic()
        return True

    def new_events(self) -> List[dict]:
        """Events appended to the probe file since the last call (whole lines only)."""
        path = self.spec.probe_path
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = []
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # counted when the whole file is read after the run
        return events


ProgressCallback = Callable[[RunSpec, List[dict]], None]


def run_all(
    specs: Sequence[RunSpec],
    site_dir: Path,
    deadline: Optional[float] = None,
    on_events: Optional[ProgressCallback] = None,
) -> List[RunResult]:
    """Run ``specs`` concurrently under the probe; returns when all have ended or been stopped.

    ``deadline`` is a ``time.monotonic()`` value. Raises :class:`Interrupted` (after stopping every
    group) on Ctrl-C or SIGTERM; the results gathered so far are attached as ``exc.results``.
    """
    live: List[_Live] = []
    results: List[RunResult] = []
    for spec in specs:
        result, item = _start(spec, site_dir)
        results.append(result)
        if item is not None:
            live.append(item)

    restore_sigterm = _sigterm_interrupts()
    try:
        while not all([item.ended() for item in live]):  # a list: every exit time gets noted
            time.sleep(POLL_S)
            _report(live, on_events)
            if deadline is not None and time.monotonic() > deadline:
                _stop_running(live, "timed_out")
        _report(live, on_events)
    except KeyboardInterrupt:
        _stop_running(live, "interrupted")
        exc = Interrupted("interrupted")
        exc.results = results
        raise exc
    finally:
        restore_sigterm()
        for item in live:
            _finish(item)
    return results


def _start(spec: RunSpec, site_dir: Path) -> Tuple[RunResult, Optional[_Live]]:
    """Start one run in a session of its own, its output into log files; no live run when it cannot start."""
    spec.dir.mkdir(parents=True, exist_ok=True)
    if spec.probe_path.exists():
        spec.probe_path.unlink()
    result = RunResult(
        name=spec.name,
        argv=list(spec.argv),
        cwd=str(spec.cwd),
        stdout=str(spec.dir / "stdout.log"),
        stderr=str(spec.dir / "stderr.log"),
        probe=str(spec.probe_path),
    )
    out = open(result.stdout, "wb")
    err = open(result.stderr, "wb")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=probe_env(site_dir, spec.probe_path, spec.env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    except OSError as exc:
        result.start_error = f"{spec.argv[0]}: {exc.strerror or exc}"
        out.close()
        err.close()
        return result, None
    result.pgid = proc.pid  # session leader: its pid is the group id
    return result, _Live(spec, proc, result, [out, err], start)


def _sigterm_interrupts() -> Callable[[], None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (main thread only); returns what restores it."""
    if not _in_main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _stop_running(live: List[_Live], reason: str) -> None:
    """Stop the groups still running, each marked with ``reason`` ("timed_out" or "interrupted")."""
    for item in live:
        if item.proc.poll() is None:
            setattr(item.result, reason, True)
            _stop_group(item.proc, item.result.pgid)


def _finish(item: _Live) -> None:
    """Nothing of the run is left running; its exit status and wall time are in its result."""
    if item.proc.poll() is None:
        _stop_group(item.proc, item.result.pgid)
    else:
        # The trainer is done; stray children left in its group (e.g. DataLoader workers) are not.
        try:
            os.killpg(item.result.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    item.ended()
    item.result.returncode = item.proc.returncode
    item.result.wall_s = item.end - item.start
    for f in item.files:
        f.close()


def _report(live: List[_Live], on_events: Optional[ProgressCallback]) -> None:
    if on_events is None:
        return
    for item in live:
        events = item.new_events()
        if events:
            on_events(item.spec, events)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def python() -> str:
    """The interpreter that runs t2s-opt (it has torch and this package)."""
    return sys.executable
