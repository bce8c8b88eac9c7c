"""Running an ablation: settings, the arms' copies, the shared preparation, one job per arm and seed.

Layout of ``OUT``::

    ablation.json            the settings the results depend on; a rerun must match them
    prepared.json, data/     clips, step budget and recogniser every arm shares (job ``prepare``)
    arms/<arm>/apply.json    how the arm's trainer was made, or why it was not applied
    arms/<arm>/trainer/      the arm's copy of the trainer package
    arms/<arm>/seed_<S>/     the run, its evaluation, job.log and result.json

Resuming: a seed whose ``result.json`` exists is not run again, an arm whose ``apply.json`` exists
is not applied again, and a job that was killed continues its training from the last checkpoint
(``train --resume auto``). More seeds or other keys may be added by a rerun with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from optimizer_tool.ablate.arms import Arm, ArmCopy, combined_arm, make_copy, single_arms
from optimizer_tool.ablate.job import PREPARED, RESULT
from optimizer_tool.errors import UsageError

SETTINGS_FILE = "ablation.json"
JOB_LOG = "job.log"
LOG_TAIL_LINES = 8


@dataclass(frozen=True)
class Settings:
    """What the user asked for. ``package`` is the trainer package folder (``.../reference_trainer``)."""

    package: Path
    keys: tuple[str, ...]
    seeds: int
    budget_steps: int
    out: Path
    device: Optional[str] = None
    size: Optional[int] = None
    frames: Optional[int] = None
    num_per_gloss: int = 2
    resamples: int = 1000
    recogniser: Optional[Path] = None
    preset: Optional[str] = "smoke"
    overrides: tuple[str, ...] = ()

    def config_overrides(self) -> list[str]:
        """The user's ``--set`` values, with ``--size``/``--frames`` as the trainer's own keys."""
        sized = [f"data.image_size={self.size}"] if self.size is not None else []
        framed = [f"data.num_frames={self.frames}"] if self.frames is not None else []
        return [*sized, *framed, *self.overrides]

    def fingerprint(self) -> dict[str, Any]:
        """Everything a result depends on (keys and seed count do not: arms and seeds are separate)."""
        return {
            "trainer": str(self.package.resolve()),
            "trainer_sha256": trainer_digest(self.package),
            "budget_steps": self.budget_steps,
            "device": self.device,
            "preset": self.preset,
            "overrides": self.config_overrides(),
            "num_per_gloss": self.num_per_gloss,
            "resamples": self.resamples,
            "recogniser": None if self.recogniser is None else str(self.recogniser.resolve()),
        }


def trainer_digest(package: Path) -> str:
    """SHA-256 over the package's Python files (names and bytes): a changed trainer is a new ablation."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def claim_out(settings: Settings) -> None:
    """Create ``OUT`` or check that the ablation there was made with the same settings."""
    out, wanted = settings.out, settings.fingerprint()
    record = out / SETTINGS_FILE
    if record.is_file():
        try:
            found = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{record}: unreadable ({exc}); choose another --out") from exc
        changed = [f"{k}: {found.get(k)!r} there, {v!r} now" for k, v in wanted.items() if found.get(k) != v]
        if changed:
            raise UsageError(
                f"--out {out} holds an ablation made with other settings ({'; '.join(changed)}); "
                "rerun with the same options to resume it, or choose another --out"
            )
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and holds no ablation ({SETTINGS_FILE} missing); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")


class Reporter(Protocol):
    """Where the runner says what it is doing (the CLI's progress bar)."""

    def add_total(self, count: int) -> None: ...

    def begin(self, label: str) -> None: ...

    def end(self, label: str, outcome: str) -> None: ...


@dataclass
class Outcome:
    """Every arm's copy, and the finished seeds and failures of the arms that were applied."""

    settings: Settings
    prepared: dict[str, Any]
    copies: list[ArmCopy]
    results: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # arm name -> seed -> result
    failures: dict[str, dict[int, str]] = field(default_factory=dict)  # arm name -> seed -> why

    @property
    def complete(self) -> bool:
        return not any(self.failures.values())


class JobFailed(Exception):
    """A job process exited with an error; the message quotes the end of its log."""


def job_env(root: Path) -> dict[str, str]:
    """The environment of a job in ``root``: its trainer copy first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


def launch(argv: list[str], root: Path, log: Path) -> None:
    """Run one job in ``root`` with its output in ``log``; JobFailed on a non-zero exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "optimizer_tool.ablate.job", *argv]
    with open(log, "w", encoding="utf-8") as sink:
        done = subprocess.run(command, cwd=root, env=job_env(root), stdout=sink, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        raise JobFailed(f"exit status {done.returncode}; log {log}:\n{tail}")


class Runner:
    def __init__(self, settings: Settings, reporter: Reporter) -> None:
        self.settings, self.reporter = settings, reporter
        self.arms_dir = settings.out / "arms"

    def _config_args(self) -> list[str]:
        s = self.settings
        preset = ["--preset", s.preset] if s.preset else []
        return [*preset, *(arg for item in s.config_overrides() for arg in ("--set", item))]

    def copies(self) -> list[ArmCopy]:
        """Baseline, single keys, then the keys that applied alone, together."""
        singles = single_arms(list(self.settings.keys))
        self.reporter.add_total(len(singles))
        made = [self._copy(arm) for arm in singles]
        together = combined_arm([c.arm.keys[0] for c in made if c.arm.keys and c.applied])
        if together is not None:
            self.reporter.add_total(1)
            made.append(self._copy(together))
        return made

    def _copy(self, arm: Arm) -> ArmCopy:
        label = f"{arm.label}: copy" if not arm.keys else f"{arm.label}: t2s-opt apply --only {','.join(arm.keys)}"
        self.reporter.begin(label)
        copy = make_copy(arm, self.settings.package, self.arms_dir / arm.folder)
        first = copy.reason.splitlines()[0] if copy.reason else ""
        self.reporter.end(label, "ready" if copy.applied else f"not applied: {first}")
        return copy

    def prepare(self, baseline: ArmCopy) -> dict[str, Any]:
        """The shared data, step budget and recogniser, made once in the baseline's copy."""
        path = self.settings.out / PREPARED
        if not path.is_file():
            label = "prepare: data, step budget, recogniser"
            self.reporter.add_total(1)
            self.reporter.begin(label)
            argv = ["prepare", "--out", str(path), "--data", str(self.settings.out / "data")]
            argv += ["--budget-steps", str(self.settings.budget_steps), *self._config_args()]
            if self.settings.recogniser is not None:
                argv += ["--recogniser", str(self.settings.recogniser.resolve())]
            launch(argv, baseline.root, self.settings.out / "prepare.log")
            self.reporter.end(label, "done")
        return json.loads(path.read_text(encoding="utf-8"))

    def seed_dir(self, arm: Arm, seed: int) -> Path:
        return self.arms_dir / arm.folder / f"seed_{seed}"

    def run_seed(self, copy: ArmCopy, seed: int) -> dict[str, Any]:
        """One arm and seed: its result, read back when an earlier run finished it."""
        out = self.seed_dir(copy.arm, seed)
        result = out / RESULT
        if not result.is_file():
            s = self.settings
            argv = ["run", "--prepared", str(s.out / PREPARED), "--seed", str(seed), "--out", str(out)]
            argv += ["--num-per-gloss", str(s.num_per_gloss), "--resamples", str(s.resamples), *self._config_args()]
            argv += ["--device", s.device] if s.device else []
            launch(argv, copy.root, out / JOB_LOG)
        return json.loads(result.read_text(encoding="utf-8"))

    def run(self) -> Outcome:
        copies = self.copies()
        baseline = copies[0]
        prepared = self.prepare(baseline)
        outcome = Outcome(self.settings, prepared, copies)
        applied = [c for c in copies if c.applied]
        self.reporter.add_total(len(applied) * self.settings.seeds)
        for copy in applied:
            for seed in range(self.settings.seeds):
                self._run_one(copy, seed, outcome)
        return outcome

    def _run_one(self, copy: ArmCopy, seed: int, outcome: Outcome) -> None:
        label = f"{copy.arm.label}: seed {seed}"
        cached = (self.seed_dir(copy.arm, seed) / RESULT).is_file()
        self.reporter.begin(label + (" (done earlier)" if cached else ": train + evaluate"))
        try:
            result = self.run_seed(copy, seed)
        except JobFailed as exc:
            outcome.failures.setdefault(copy.arm.name, {})[seed] = str(exc)
            self.reporter.end(label, "failed")
            return
        outcome.results.setdefault(copy.arm.name, {})[seed] = result
        self.reporter.end(label, "done earlier" if cached else f"{result['steps']} steps")
