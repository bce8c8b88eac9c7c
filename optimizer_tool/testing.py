"""Run a rule's VALID/INVALID examples (Fixit style): the rules document and test themselves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from optimizer_tool.contract import Example
from optimizer_tool.engine import build_units, check_units, run_check
from optimizer_tool.findings import Finding
from optimizer_tool.project import load
from optimizer_tool.registry import optimizations
from optimizer_tool.settings import Settings

# The smallest trainer every optimization has something to say about (no EMA, schedule, clipping,
# monitoring): tests that are about input handling, not about a rule, check or fix it.
MINIMAL_TRAINER = """\
import torch

model = torch.nn.Linear(2, 2)
optimizer = torch.optim.Adam(model.parameters())
for step in range(3):
    loss = model(torch.randn(2, 2)).sum()
    loss.backward()
    optimizer.step()
"""

# One step of epsilon regression in a loop over ``x`` (model, optimizer, torch and F defined by the
# fixture), indented for a loop body nested twice: the objective a shape-test fixture needs.
NOISE_STEP = """\
        noise = torch.randn_like(x)
        t = torch.randint(0, 100, (x.shape[0],))
        loss = F.mse_loss(model(x + noise, t), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""


def write_example(example: Example, folder: Path) -> Path:
    """Write an example (one file, or {relative path: source}) and return the file to check."""
    files = {"train.py": example} if isinstance(example, str) else example
    first = None
    for rel, source in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        first = first or path
    return first


def unit_verdicts(folder: Path, files: dict[str, str], entry: str = "train.py") -> dict[str, dict]:
    """Write ``files`` to ``folder`` and check ``entry`` as ``t2s-opt check --no-config`` does: the
    verdicts of its unit, ``{key: {"state": ..., "reason": ...}}``."""
    write_example(files, folder)
    path = (folder / entry).resolve()
    result, _ = run_check([path], Settings())
    (facts,) = [f for f in result.facts if f.entry == path]
    return {
        key: {
            "state": v.state.value,
            "reason": v.reason,
            "location": (
                {"filename": v.location.path.resolve().relative_to(folder.resolve()).as_posix(), "row": v.location.line}
                if v.location is not None
                else None
            ),
        }
        for key, v in facts.verdicts.items()
    }


def findings_for(example: Example, folder: Path) -> list[Finding]:
    entry = write_example(example, folder)
    loaded = load([entry])
    units = build_units(loaded, [entry.resolve()])
    return check_units(units, Settings(), loaded.root, optimizations()).findings


def fixed_sources(example: Example, folder: Path, keys: list[str]):
    """Apply the fixes of ``keys`` to an example project in memory: (plan, {relative path: new source})."""
    from optimizer_tool.apply import plan, select

    entry = write_example(example, folder)
    result = plan([entry], select(keys, None, unsafe=True), Settings())
    return result, {p.relative_to(folder.resolve()).as_posix(): text for p, text in result.changed.items()}


def run_script(folder: Path, *args: str, script: str = "train.py", timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a (patched) trainer script in ``folder`` with this Python; it must exit 0."""
    done = subprocess.run([sys.executable, script, *args], cwd=folder, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done
