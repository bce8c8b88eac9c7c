"""Running trainer processes under the probe: own session, one deadline, every descendant stopped.

Every run starts with ``start_new_session=True``, so Ctrl-C reaches only ``t2s-opt``, which then
stops the runs and still writes the partial report; the same happens at the deadline (``--timeout``).
What is stopped is the run's process tree (:mod:`optimizer_tool.smoke.proctree`), not only its
process group: a child that called ``setsid()`` or daemonized is found and killed too. All runs in
flight are stopped together: SIGTERM, one grace period of ``GRACE_S`` for all of them, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from optimizer_tool.smoke import probe as probe_module
from optimizer_tool.smoke.proctree import ProcessTree, subreaper

GRACE_S = 5.0  # after SIGTERM, for every process of the runs together; then SIGKILL
POLL_S = 0.2  # how often the runs' process trees are walked and the deadline checked
HELPER_POLL_S = 0.1

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
    pids: List[int] = field(default_factory=list)  # every process seen in the run's tree, the leader first
    survivors: List[int] = field(default_factory=list)  # still running after the kill (should stay empty)
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
            return f"timed out after {self.wall_s:.1f} s; {self._stopped()}"
        if self.interrupted:
            return f"interrupted after {self.wall_s:.1f} s; {self._stopped()}"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode}"

    def _stopped(self) -> str:
        n = len(self.pids) or 1
        text = f"{n} process{'es' if n > 1 else ''} of the run stopped (leader pid {self.pgid})"
        return text + (f"; still running: {self.survivors}" if self.survivors else "")


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

    ``deadline`` is a ``time.monotonic()`` value, one for the whole smoke test: runs still going then
    are stopped together (at most ``GRACE_S`` more), and runs asked for after it are not started.
    Raises :class:`Interrupted` (after stopping every run) on Ctrl-C or SIGTERM; the results
    gathered so far are attached as ``exc.results``.
    """
    if deadline is not None and time.monotonic() >= deadline:
        return [_not_started(spec, "--timeout reached before it started") for spec in specs]
    with subreaper():
        tree = ProcessTree()
        live: List[_Live] = []
        results: List[RunResult] = []
        for spec in specs:
            result, item = _start(spec, site_dir, tree)
            results.append(result)
            if item is not None:
                live.append(item)
        restore_sigterm = _sigterm_interrupts()
        try:
            _wait(live, tree, deadline, on_events)
        except KeyboardInterrupt:
            _stop_running(live, tree, "interrupted")
            exc = Interrupted("interrupted")
            exc.results = results
            raise exc
        finally:
            restore_sigterm()
            _finish(live, tree)
    return results


def _wait(
    live: List[_Live], tree: ProcessTree, deadline: Optional[float], on_events: Optional[ProgressCallback]
) -> None:
    """Until every leader has exited, or the deadline: then every run still going is stopped."""
    while True:
        ended = [item.ended() for item in live]  # a list: every exit time gets noted
        tree.scan()  # descendants are remembered while their parents live
        _report(live, on_events)
        if all(ended):
            return
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            _stop_running(live, tree, "timed_out")
            _report(live, on_events)
            return
        time.sleep(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - now)))


def _start(spec: RunSpec, site_dir: Path, tree: ProcessTree) -> Tuple[RunResult, Optional[_Live]]:
    """Start one run in a session of its own, its output into log files; no live run when it cannot start."""
    spec.dir.mkdir(parents=True, exist_ok=True)
    if spec.probe_path.exists():
        spec.probe_path.unlink()
    result = _new_result(spec)
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
    tree.add_leader(proc.pid, pgid=proc.pid)
    return result, _Live(spec, proc, result, [out, err], start)


def _new_result(spec: RunSpec) -> RunResult:
    return RunResult(
        name=spec.name,
        argv=list(spec.argv),
        cwd=str(spec.cwd),
        stdout=str(spec.dir / "stdout.log"),
        stderr=str(spec.dir / "stderr.log"),
        probe=str(spec.probe_path),
    )


def _not_started(spec: RunSpec, why: str) -> RunResult:
    result = _new_result(spec)
    result.start_error, result.timed_out = why, True
    return result


def _sigterm_interrupts() -> Callable[[], None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (main thread only); returns what restores it."""
    if not _in_main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _stop_running(live: List[_Live], tree: ProcessTree, reason: str) -> None:
    """Mark the runs still going with ``reason`` ("timed_out" or "interrupted"); stop every process of
    every run together: SIGTERM, one grace period for all, SIGKILL (see :meth:`ProcessTree.stop`)."""
    for item in live:
        if item.proc.poll() is None:
            setattr(item.result, reason, True)
    tree.stop(GRACE_S, tick=lambda: [item.ended() for item in live])


def _finish(live: List[_Live], tree: ProcessTree) -> None:
    """Nothing of the runs is left running; exit status, wall time and processes are in their results."""
    # Runs that ended may leave children behind (DataLoader workers, a background daemon): no grace.
    tree.kill(tick=lambda: [item.ended() for item in live])
    alive = set(tree.survivors())
    for item in live:
        item.proc.wait()
        item.ended()
        item.result.returncode = item.proc.returncode
        item.result.wall_s = item.end - item.start
        item.result.pids = tree.pids(item.proc.pid)
        item.result.survivors = [pid for pid in item.result.pids if pid in alive]
        for f in item.files:
            f.close()


@dataclass
class HelperResult:
    returncode: Optional[int]
    stdout: str
    stderr: str
    timed_out: bool = False


def run_helper(argv: List[str], cwd: Path, env: Dict[str, str], timeout: Optional[float]) -> HelperResult:
    """A short process of t2s-opt's own (reading a config, unpickling a checkpoint) in a session of its own.

    At ``timeout`` its whole process tree is killed at once (SIGKILL, no grace: it has nothing to save)."""
    with subreaper(), tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        tree = ProcessTree()
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
        except OSError as exc:
            return HelperResult(None, "", f"{argv[0]}: {exc.strerror or exc}")
        tree.add_leader(proc.pid, pgid=proc.pid)
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        timed_out = False
        while proc.poll() is None:
            if end is not None and time.monotonic() >= end:
                timed_out = True
                break
            tree.scan()
            time.sleep(HELPER_POLL_S)
        tree.kill(tick=proc.poll)
        proc.wait()
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode("utf-8", errors="replace"))
        return HelperResult(proc.returncode, texts[0], texts[1], timed_out)


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
