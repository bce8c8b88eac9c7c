"""The arms of an ablation and each one's copy of the trainer.

Arms: the trainer as given (baseline), each key alone, and all keys together. Each arm's trainer
is a copy in ``ARM/trainer/<package>``: the baseline's a plain copy, the others written by
``t2s-opt apply --only KEYS --out ...`` (the installed command, run as a subprocess: what the user
would run). An apply that refuses, holds a key back or finds nothing to fix leaves the arm "not
applied" with the command's own reason; such an arm is reported and never trained, so no arm runs
unpatched under a key's name. The outcome is kept in ``ARM/apply.json``: a resumed ablation does
not apply again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from optimizer_tool.ablate.job import write_json
from optimizer_tool.errors import UsageError
from optimizer_tool.project import SKIP_DIRS

BASELINE = "baseline"
APPLY_RECORD = "apply.json"
APPLY_TIMEOUT_S = 600


@dataclass(frozen=True)
class Arm:
    """One configuration to train: ``keys`` applied to the trainer (none for the baseline)."""

    name: str
    keys: tuple[str, ...]

    @property
    def folder(self) -> str:
        """Folder name under ``OUT/arms``; the combined arm's names its keys, so a rerun with other keys
        does not take its results for this combination."""
        return "all-" + "+".join(self.keys) if self.name == "all" else self.name

    @property
    def label(self) -> str:
        return f"all ({', '.join(self.keys)})" if self.name == "all" else self.name


@dataclass(frozen=True)
class ArmCopy:
    """The outcome of making an arm's trainer: where it is, or why it was not applied."""

    arm: Arm
    root: Path  # the folder holding the package: the jobs run there
    applied: bool
    reason: str = ""  # why not applied, in the apply command's words
    command: str = ""
    output: str = ""  # what apply printed (stdout, then stderr)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "arm": asdict(self.arm), "root": str(self.root)}


def single_arms(keys: list[str]) -> list[Arm]:
    """The baseline and one arm per key, in the order given."""
    return [Arm(BASELINE, ()), *(Arm(key, (key,)) for key in keys)]


def combined_arm(applied_keys: list[str]) -> Arm | None:
    """All keys that could be applied alone, together; none for fewer than two (it would repeat an arm)."""
    return Arm("all", tuple(applied_keys)) if len(applied_keys) >= 2 else None


def make_copy(arm: Arm, package: Path, arm_dir: Path) -> ArmCopy:
    """The arm's trainer under ``arm_dir/trainer``, made once: a recorded outcome is read back."""
    record = arm_dir / APPLY_RECORD
    if record.is_file():
        return _read_record(record, arm)
    root = arm_dir / "trainer"
    if root.exists():  # an interrupted earlier attempt: ours to replace
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if arm.keys:
        copy = _apply(arm, package, root)
    else:
        shutil.copytree(package, root / package.name, ignore=shutil.ignore_patterns(*SKIP_DIRS))
        copy = ArmCopy(arm, root, applied=True, command=f"copy of {package}")
    write_json(record, copy.to_dict())
    return copy


def apply_command(keys: tuple[str, ...], package: Path, destination: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "optimizer_tool.cli",
        "apply",
        "--only",
        ",".join(keys),
        "--out",
        str(destination),
        str(package),
    ]


def _apply(arm: Arm, package: Path, root: Path) -> ArmCopy:
    argv = apply_command(arm.keys, package, root / package.name)
    shown = " ".join(["t2s-opt", *argv[3:]])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=APPLY_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return ArmCopy(arm, root, applied=False, reason=f"apply did not finish in {APPLY_TIMEOUT_S} s", command=shown)
    applied, reason = judge_apply(done.returncode, done.stdout, done.stderr)
    return ArmCopy(arm, root, applied, reason, shown, done.stdout + done.stderr)


def judge_apply(returncode: int, stdout: str, stderr: str) -> tuple[bool, str]:
    """Whether ``t2s-opt apply`` wrote every selected key, else why not (apply's exit codes: 0 applied;
    1 applied with findings left, or held back / aborted; 2 refused or usage error)."""
    message = _strip_prefix(stderr).strip()
    if returncode == 0 and "nothing to fix" in stdout and "wrote" not in stdout:
        return False, "nothing to fix: the trainer already has it (the arm would repeat the baseline)"
    if returncode in (0, 1) and "not applied:" not in stderr and "nothing was written" not in stderr:
        return True, ""
    if returncode in (1, 2):
        return False, message or f"apply exited with status {returncode}"
    lines = message.splitlines()
    return False, f"apply failed with status {returncode}: {lines[-1] if lines else 'no message'}"


def _strip_prefix(text: str) -> str:
    return "\n".join(line.removeprefix("t2s-opt: error: ") for line in text.splitlines())


def _read_record(path: Path, arm: Arm) -> ArmCopy:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ArmCopy(arm, Path(data["root"]), bool(data["applied"]), data["reason"], data["command"], data["output"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: unreadable apply record ({exc}); delete {path.parent} to redo the arm") from exc
