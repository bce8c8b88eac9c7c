"""Reading a probe log (JSON lines written by ``probe.py``) back into one run's measurements."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional


@dataclass
class ProbeRecord:
    """What the probe saw in one run. ``pid`` is the training process: the one with the most
    optimizer steps (DataLoader workers and helper processes load the probe too)."""

    path: Path
    pid: Optional[int] = None
    started: bool = False
    torch_loaded: bool = False
    steps: List[Dict[str, Any]] = field(default_factory=list)  # optimizer 0 of the training process
    other_optimizer_steps: int = 0
    init: List[Dict[str, Any]] = field(default_factory=list)
    saves: List[Dict[str, Any]] = field(default_factory=list)  # "final_path" follows renames
    exceptions: List[Dict[str, Any]] = field(default_factory=list)
    probe_errors: List[Dict[str, Any]] = field(default_factory=list)
    exit: Optional[Dict[str, Any]] = None
    states: List[Dict[str, Any]] = field(default_factory=list)  # state fingerprints before some steps
    snapshot_dirs: List[Dict[str, Any]] = field(default_factory=list)  # copies of checkpoint folders
    max_steps: Optional[int] = None  # the run was stopped after this many steps by --max-steps
    partial_lines: int = 0

    @property
    def checkpoints(self) -> List[Dict[str, Any]]:
        """Saves of dicts (training state), oldest first; bare tensors (samples) excluded."""
        return [s for s in self.saves if s.get("type") != "Tensor" and s.get("keys") is not None]

    @property
    def tensor_saves(self) -> List[Dict[str, Any]]:
        return [s for s in self.saves if "tensor" in s]

    @property
    def frameworks(self) -> List[str]:
        """Training frameworks the process had loaded at exit (``deepspeed`` ...)."""
        return list((self.exit or {}).get("frameworks") or [])

    def state_before(self, step: int) -> Optional[Dict[str, Any]]:
        """The state fingerprint taken just before optimizer step ``step``, if the probe took one there."""
        return next((s for s in self.states if s.get("n") == step), None)

    def peak_memory(self) -> Dict[str, Optional[int]]:
        rows = self.steps + ([self.exit] if self.exit else [])
        rss = [r["rss_peak"] for r in rows if r.get("rss_peak") is not None]
        cuda = [r["cuda_peak"] for r in rows if r.get("cuda_peak") is not None]
        return {"rss_peak": max(rss) if rss else None, "cuda_peak": max(cuda) if cuda else None}


def read_events(path: Path) -> tuple[List[Dict[str, Any]], int]:
    """Events in file order; a line cut short by a kill is counted, not fatal."""
    events, broken = [], 0
    if not path.exists():
        return events, broken
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                broken += 1
    return events, broken


def load_probe(path: Path) -> ProbeRecord:
    events, broken = read_events(path)
    record = ProbeRecord(path=path, partial_lines=broken)
    step_counts = Counter(e["pid"] for e in events if e.get("ev") == "step")
    starts = [e["pid"] for e in events if e.get("ev") == "start"]
    record.started = bool(starts)
    record.pid = step_counts.most_common(1)[0][0] if step_counts else (starts[0] if starts else None)
    moves: Dict[str, str] = {}
    for e in events:
        kind = e.get("ev")
        if kind == "exception":
            record.exceptions.append(e)
        elif kind == "probe_error":
            record.probe_errors.append(e)
        if e.get("pid") != record.pid:
            continue
        if kind == "torch":
            record.torch_loaded = True
        elif kind == "step":
            if e.get("opt", 0) == 0:
                record.steps.append(e)
            else:
                record.other_optimizer_steps += 1
        elif kind == "init" and not record.init:
            record.init = e.get("params", [])
        elif kind == "save":
            record.saves.append(dict(e))
        elif kind == "move":
            moves[e["src"]] = e["dst"]
        elif kind == "exit":
            record.exit = e
        elif kind == "state" and e.get("opt", 0) == 0:
            record.states.append(e)
        elif kind == "snapshot_dir":
            record.snapshot_dirs.append(e)
        elif kind == "max_steps":
            record.max_steps = e.get("steps")
    for save in record.saves:
        final = save.get("path")
        seen = set()
        while final in moves and final not in seen:  # a tmp file renamed onto the real name
            seen.add(final)
            final = moves[final]
        save["final_path"] = final
    return record


def existing_checkpoint(record: ProbeRecord) -> Optional[Dict[str, Any]]:
    """The last checkpoint save whose file still exists under its final name."""
    for save in reversed(record.checkpoints):
        path = save.get("final_path")
        if isinstance(path, str) and os.path.isfile(path):
            return save
    return None


def checkpoint_files(record: ProbeRecord) -> List[Dict[str, Any]]:
    """The saves of the last checkpoint that still exists: every checkpoint file (torch.save dict or
    safetensors) written at the same optimizer step as it, each file once (its last save), oldest first."""
    last = existing_checkpoint(record)
    if last is None:
        return []
    by_path: Dict[str, Dict[str, Any]] = {}
    for save in record.checkpoints:
        path = save.get("final_path")
        if save.get("step") == last.get("step") and isinstance(path, str) and os.path.isfile(path):
            by_path.pop(path, None)
            by_path[path] = save
    return list(by_path.values())
