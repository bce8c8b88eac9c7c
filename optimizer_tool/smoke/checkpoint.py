"""Reading a saved checkpoint back for the EMA check: which entry holds the EMA weights, which the
live ones, and which EMA tensor belongs to which live tensor.

A checkpoint is untrusted data: unpickling it can run any code (``__reduce__``). In t2s-opt's own
process it is only ever read with ``torch.load(weights_only=True)``. A checkpoint that needs full
unpickling (it pickles an ``argparse.Namespace``, a config class ...) is unpickled by
``python -m optimizer_tool.smoke.unpickle`` in a separate process, started like the run that wrote
it, which passes back its containers and tensors in a file that again loads with
``weights_only=True``; without that process (or when it fails) the check is not judged.

``torch`` is imported inside the functions that touch tensors, as in the rest of the smoke checks.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from optimizer_tool.smoke.runner import run_helper
from optimizer_tool.smoke.unpickle import LOAD_FAILED

TOOL_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the optimizer_tool package


class CheckpointUnreadable(Exception):
    """The file does not load back, in any process: the check fails."""


class CheckpointNotJudged(Exception):
    """Loading it needs full unpickling, and no separate process could do that: the check is n/a."""


@dataclass
class Unpickler:
    """Where a checkpoint that ``weights_only=True`` refuses is unpickled: a process of its own, started
    like the run that wrote it (``cwd``, and ``env`` such as its PYTHONPATH), ended at ``deadline``."""

    cwd: Path
    env: Dict[str, str] = field(default_factory=dict)
    deadline: Optional[float] = None  # time.monotonic(): the smoke test's --timeout
    timeout: float = 300.0

    def load(self, path: str) -> Any:
        """The checkpoint's containers and tensors, unpickled in the separate process."""
        import torch

        timeout = self.timeout if self.deadline is None else min(self.timeout, self.deadline - time.monotonic())
        if timeout <= 0:
            raise CheckpointNotJudged("--timeout reached before it could be unpickled in a separate process")
        with tempfile.TemporaryDirectory(prefix="t2s-unpickle-") as tmp:
            out = Path(tmp) / "tensors.pt"
            argv = [sys.executable, "-m", "optimizer_tool.smoke.unpickle", path, str(out)]
            done = run_helper(argv, self.cwd, self._environ(), timeout)
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            if done.timed_out:
                raise CheckpointNotJudged(f"unpickling it in a separate process timed out after {timeout:.0f} s")
            if done.returncode == LOAD_FAILED:
                raise CheckpointUnreadable(f"{path}: {why}")
            if done.returncode != 0:
                raise CheckpointNotJudged(f"unpickling it in a separate process failed: {why}")
            try:
                return torch.load(out, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise CheckpointNotJudged(f"the separate process passed back no plain tensors: {exc}") from exc

    def _environ(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] + [str(TOOL_ROOT)]
        env["PYTHONPATH"] = os.pathsep.join(parts)
        return env


def load_checkpoint(path: str, unpickler: Optional[Unpickler] = None) -> Tuple[Any, str]:
    """The checkpoint, and how it was read. Never unpickles in this process beyond ``weights_only=True``.

    Raises :class:`CheckpointUnreadable` (does not load) or :class:`CheckpointNotJudged` (needs a
    separate process to unpickle it, and there was none or it could not)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True), "loads with weights_only=True"
    except Exception as safe_exc:
        reason = _weights_only_reason(safe_exc)
    needs = f"needs weights_only=False ({reason})"
    if unpickler is None:
        raise CheckpointNotJudged(f"{needs}; t2s-opt does not unpickle checkpoints in its own process")
    try:
        obj = unpickler.load(path)
    except CheckpointNotJudged as exc:
        raise CheckpointNotJudged(f"{needs}; {exc}") from exc
    return obj, f"{needs}: unpickled in a separate process, which passed back its tensors"


SAFETENSORS = ".safetensors"


def load_safetensors(path: str) -> Dict[str, Any]:
    """A safetensors file: plain tensors, no pickle, safe to read in this process."""
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as exc:
        raise CheckpointUnreadable(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


@dataclass
class LoadedCheckpoint:
    """What the EMA check reads: one file's content, or for a checkpoint folder (accelerate ``save_state``,
    diffusers ``save_pretrained``) a dict of its files by path relative to the folder."""

    content: Any
    path: str  # the file, or the folder
    name: str  # the file name, or "FOLDER/" for a folder
    note: str  # how it was read
    not_optimized: List[str] = field(default_factory=list)  # entries the probe saw saved from non-optimized tensors


def load_checkpoint_files(saves: List[Dict[str, Any]], unpickler: Optional["Unpickler"] = None) -> LoadedCheckpoint:
    """The last checkpoint: its one torch.save file (``unpickler`` for one that needs full unpickling), or,
    when it is several files or safetensors, every file the run wrote at that step plus the other
    safetensors files under their common folder (torch files there read with ``weights_only=True`` only)."""
    paths = [s["final_path"] for s in saves]
    if len(paths) == 1 and not paths[0].endswith(SAFETENSORS):
        content, note = load_checkpoint(paths[0], unpickler)
        return LoadedCheckpoint(content, paths[0], Path(paths[0]).name, note)
    folder = Path(os.path.commonpath([os.path.dirname(p) for p in paths]))
    unseen = sorted(str(p) for p in folder.glob("**/*" + SAFETENSORS) if str(p) not in paths and _shallow(p, folder))
    content, notes = {}, []
    for path in paths + unseen:
        key = os.path.relpath(path, folder)
        if path.endswith(SAFETENSORS):
            content[key] = load_safetensors(path)
            continue
        try:  # weights_only=True only: RNG states and configs beside the weights need no separate process
            content[key], _ = load_checkpoint(path, None)
        except CheckpointNotJudged as exc:
            notes.append(f"{key} not read ({str(exc).split(';')[0]})")
    # The probe compared each safetensors save with the optimizer's parameters: a file of tensors that are
    # not the optimized ones but share the model's names is an EMA copy (accelerate model_1.safetensors).
    not_optimized = [os.path.relpath(s["final_path"], folder) for s in saves if s.get("optimized") == 0.0]
    note = "; ".join([f"{len(content)} files of the folder read"] + notes)
    return LoadedCheckpoint(content, str(folder), f"{folder.name}/", note, not_optimized)


def _shallow(path: Path, folder: Path, depth: int = 2) -> bool:
    return len(path.relative_to(folder).parts) <= depth


def _weights_only_reason(exc: Exception) -> str:
    """The line of torch's long weights_only message that names the refused global."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    for line in text.splitlines():
        if "Unsupported global" in line:
            return line.strip().split(". Please")[0].replace("WeightsUnpickler error: ", "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else type(exc).__name__


def _flatten(obj: Any, prefix: str = "", depth: int = 0) -> Dict[str, Any]:
    import torch

    out: Dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif depth < 8 and isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k), depth + 1))
    elif depth < 8 and isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}.{i}" if prefix else str(i), depth + 1))
    return out


def _float_tensors(flat: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in flat.items() if v.is_floating_point()}


def _names_ema(key: Any) -> bool:
    """A key or file name of EMA weights: contains "ema" (ema, ema_unet, unet_ema/...), or diffusers
    ``EMAModel.state_dict()``'s ``shadow_params`` (saved by accelerate as custom_checkpoint_N.pkl)."""
    return "ema" in str(key).lower() or str(key) == "shadow_params"


def find_ema_state(ckpt: Any, not_optimized: Sequence[str] = ()) -> Tuple[Optional[str], Dict[str, Any]]:
    """The checkpoint entry holding EMA weights (a key or file name containing "ema", top level or one
    below); else one of ``not_optimized`` (entries saved from tensors no optimizer updates) that shares
    most tensor names with the live weights."""
    if not isinstance(ckpt, dict):
        return None, {}
    candidates = []
    for key, value in ckpt.items():
        if _names_ema(key):
            candidates.append((str(key), value))
        elif isinstance(value, dict):
            candidates += [(f"{key}.{k}", v) for k, v in value.items() if _names_ema(k)]
    if not candidates:
        return _unnamed_ema(ckpt, not_optimized)
    best: Tuple[Optional[str], Dict[str, Any]] = (None, {})
    for key, value in candidates:
        # ema_pytorch keeps the live model inside its state ("online_model.*"); that is not the average.
        tensors = {k: v for k, v in _float_tensors(_flatten(value)).items() if "online" not in k.lower()}
        if len(tensors) > len(best[1]):
            best = (key, tensors)
    return best


def _unnamed_ema(ckpt: Dict[str, Any], not_optimized: Sequence[str]) -> Tuple[Optional[str], Dict[str, Any]]:
    """An EMA copy without "ema" in its name: not the optimized tensors, and at least half of its tensor
    names are names of the live weights (a frozen text encoder or VAE shares none)."""
    for key in not_optimized:
        tensors = _float_tensors(_flatten(ckpt.get(key)))
        _, model = find_model_state({k: v for k, v in ckpt.items() if k not in not_optimized}, key, tensors)
        named = sum(1 for name in tensors if _suffix_match(name, model) is not None)
        if tensors and named * 2 >= len(tensors):
            return key, tensors
    return None, {}


def find_model_state(ckpt: Dict[str, Any], ema_key: str, ema: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
    """The live weights: the non-EMA, non-optimizer entry that shares the most tensor names with the EMA."""
    best: Tuple[Optional[str], Dict[str, Any], int] = (None, {}, -1)
    for key, value in ckpt.items():
        if _names_ema(key) or key == ema_key or not isinstance(value, dict):
            continue
        if "param_groups" in value:
            continue  # optimizer state
        tensors = _float_tensors(_flatten(value))
        if not tensors:
            continue
        score = sum(1 for name in ema if _suffix_match(name, tensors) is not None)
        if score > best[2] or (score == best[2] and len(tensors) > len(best[1])):
            best = (str(key), tensors, score)
    return best[0], best[1]


def _suffix_match(name: str, model: Dict[str, Any]) -> Optional[str]:
    """Longest model key that ``name`` ends with ("module.conv.weight" -> "conv.weight")."""
    parts = name.split(".")
    for i in range(len(parts)):
        candidate = ".".join(parts[i:])
        if candidate in model:
            return candidate
    return None


def pair_ema_with_model(ema: Dict[str, Any], model: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    pairs, used, unmatched = [], set(), []
    for name, tensor in ema.items():
        match = _suffix_match(name, model)
        if match is not None and match not in used and model[match].shape == tensor.shape:
            pairs.append((match, tensor, model[match]))
            used.add(match)
        else:
            unmatched.append(tensor)
    # Lists without names (diffusers EMAModel.shadow_params) follow the model's parameter order.
    remaining = [(k, v) for k, v in model.items() if k not in used]
    j = 0
    for tensor in unmatched:
        while j < len(remaining) and remaining[j][1].shape != tensor.shape:
            j += 1
        if j == len(remaining):
            break
        pairs.append((remaining[j][0], tensor, remaining[j][1]))
        j += 1
    return pairs


def describe_keys(ckpt: Any, limit: int = 6) -> str:
    """The first top-level keys of a checkpoint, for messages (the type name when it is no dict)."""
    if not isinstance(ckpt, dict):
        return type(ckpt).__name__
    names = [str(k) for k in ckpt]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} keys)" if len(names) > limit else "")
