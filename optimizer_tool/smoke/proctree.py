"""Every process a run started, found by the process tree (not only by the process group), and stopped.

A trainer can leave its process group (``setsid()``, ``start_new_session=True``) or daemonize (fork
twice, the middle process exits at once); killing the group misses both. So, while runs are live:

* t2s-opt is a *child subreaper* (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): a descendant whose parent
  dies is re-parented to t2s-opt, not to init, so it stays in t2s-opt's tree;
* :meth:`ProcessTree.scan` walks the tree (parent pids, read with psutil) from the runs' leaders and
  from the orphans t2s-opt adopted, and remembers every process it sees, by pid and start time (a pid
  that the system reuses for an unrelated process is never signalled);
* :meth:`ProcessTree.stop` sends SIGTERM to every member and to the process groups, waits one grace
  period for all of them together, then :meth:`ProcessTree.kill` freezes what is left with SIGSTOP
  (a stopped process cannot fork), re-scanning until no new member appears, sends SIGKILL to all of
  them and reaps the adopted orphans.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import psutil

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
TICK_S = 0.05  # how often the stop re-scans while it waits for processes to exit
REAP_S = 2.0  # how long, after SIGKILL, to wait for the killed processes to be gone

Key = Tuple[int, float]  # pid and start time: a process, even after its pid is reused


def _key(proc: psutil.Process) -> Optional[Key]:
    try:
        return proc.pid, proc.create_time()
    except psutil.Error:
        return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, signum: int) -> None:
    try:
        proc.send_signal(signum)  # psutil refuses when the pid now belongs to another process
    except psutil.Error:
        pass


def _children_map() -> Dict[int, List[psutil.Process]]:
    """Every process by its parent pid, from one pass over the process table."""
    children: Dict[int, List[psutil.Process]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            children.setdefault(ppid, []).append(proc)
    return children


@contextmanager
def subreaper() -> Iterator[bool]:
    """Orphaned descendants are re-parented to this process while the block runs (Linux); yields whether."""
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None
    if prctl is None:
        yield False
        return
    flag = ctypes.c_int(0)
    was = prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value != 0
    became = not was and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield was or became
    finally:
        if became:
            prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


class ProcessTree:
    """The processes of the runs started since it was made: the leaders, their descendants, and the
    orphans this process adopted as their subreaper. Children this process had before are not its."""

    def __init__(self) -> None:
        self.me = os.getpid()
        self.before: Set[Key] = {k for k in map(_key, psutil.Process(self.me).children()) if k}
        self.leaders: Dict[int, psutil.Process] = {}
        self.groups: Set[int] = set()
        self.seen: Dict[Key, psutil.Process] = {}
        self.owner: Dict[Key, int] = {}  # the leader a process was first seen under (absent: adopted)

    def add_leader(self, pid: int, pgid: Optional[int] = None) -> None:
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return  # already gone
        self.leaders[pid] = proc
        if pgid is not None:
            self.groups.add(pgid)
        self.scan()

    def pids(self, leader: int) -> List[int]:
        """Every process seen under ``leader``, in the order first seen (the leader first)."""
        return [key[0] for key, owner in self.owner.items() if owner == leader]

    def scan(self) -> List[psutil.Process]:
        """The living members now; remembers the new ones. Walks from the leaders and the adopted orphans."""
        children = _children_map()
        starts: List[Tuple[psutil.Process, Optional[int]]] = [(p, pid) for pid, p in self.leaders.items()]
        sole = next(iter(self.leaders)) if len(self.leaders) == 1 else None
        for proc in children.get(self.me, []):
            key = _key(proc)
            if key and key not in self.before and proc.pid not in self.leaders:
                starts.append((proc, self.owner.get(key, sole)))  # an orphan re-parented to us
        members: List[psutil.Process] = []
        stack = list(starts)
        while stack:
            proc, owner = stack.pop()
            key = _key(proc)
            if key is None or key in self.before:
                continue
            if key not in self.seen:
                self.seen[key] = proc
                if owner is not None:
                    self.owner[key] = owner
            if _alive(proc):
                members.append(self.seen[key])
            stack += [(child, owner) for child in children.get(proc.pid, [])]
        return members

    def stop(self, grace: float, tick: Callable[[], None] = lambda: None) -> None:
        """SIGTERM to every member, up to ``grace`` seconds for all of them together to exit, then :meth:`kill`.

        ``tick`` runs on every re-scan (the caller reaps its leaders there and notes their exit times)."""
        end = time.monotonic() + grace
        termed: Set[Key] = set()
        self._signal_groups(signal.SIGTERM)
        while True:
            tick()
            members = self.scan()
            for proc in members:
                key = _key(proc)
                if key and key not in termed:
                    termed.add(key)
                    _signal(proc, signal.SIGTERM)
            if not members or time.monotonic() >= end:
                break
            time.sleep(TICK_S)
        self.kill(tick)

    def kill(self, tick: Callable[[], None] = lambda: None) -> None:
        """SIGSTOP every member, re-scanning until no new one appears, then SIGKILL them all; reap."""
        frozen: Dict[Key, psutil.Process] = {}
        for _ in range(100):
            new = [p for p in self.scan() if _key(p) and _key(p) not in frozen]
            if not new:
                break
            for proc in new:
                _signal(proc, signal.SIGSTOP)
                frozen[_key(proc)] = proc
        for proc in frozen.values():
            _signal(proc, signal.SIGKILL)
        self._signal_groups(signal.SIGKILL)
        end = time.monotonic() + REAP_S
        while True:
            tick()
            self._reap_adopted()
            if not any(_alive(p) for p in self.seen.values()) or time.monotonic() >= end:
                break
            time.sleep(TICK_S)
        self._reap_adopted()  # the last ones to die, after the check above

    def survivors(self) -> List[int]:
        """Pids of members still running (none after :meth:`kill`, unless one could not be killed)."""
        return sorted(p.pid for p in self.seen.values() if _alive(p))

    def _signal_groups(self, signum: int) -> None:
        """The leaders' process groups too: on systems without a subreaper they catch what the walk misses."""
        for pgid in self.groups:
            try:
                os.killpg(pgid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def _reap_adopted(self) -> None:
        """Collect the exit status of the orphans re-parented to this process (leaders: their Popen does)."""
        for key, proc in self.seen.items():
            if proc.pid in self.leaders:
                continue
            try:
                if proc.ppid() != self.me:
                    continue
                os.waitpid(proc.pid, os.WNOHANG)
            except (psutil.Error, ChildProcessError, OSError):
                pass
