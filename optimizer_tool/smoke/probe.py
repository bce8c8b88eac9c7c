"""Step probe injected into a training process by ``t2s-opt smoke-test``.

Loaded without editing the trainer: the smoke runner puts a generated ``sitecustomize.py`` on
``PYTHONPATH`` that calls :func:`activate_from_env`, or the trainer is started through
``python -m optimizer_tool.smoke.probe train.py ARGS`` (for ``python -I`` or ``-E``, which skip
``PYTHONPATH``). The probe does nothing until ``torch`` is imported, so helper processes that never
use torch pay nothing. Then it records, as JSON lines appended to the file named by
``$T2S_SMOKE_PROBE``:

- ``step``: per ``optimizer.step()`` (global optimizer hooks): the loss (sum of the scalars passed
  to ``backward()`` since the previous step, unscaled when they came from ``GradScaler.scale``),
  every param group's lr and configured base lr, the gradient norm the optimizer sees, each
  gradient-norm clip (max_norm, the pre-clip norm, the post-clip norm, and the norm of the same
  gradients when the optimizer steps), peak RSS and CUDA memory, elapsed time. Clips are seen where
  every norm clip of torch >= 2.6 ends (``torch.nn.utils.clip_grads_with_norm_``, which
  ``clip_grad_norm_``, accelerate and Lightning reach), so a ``clip_grad_norm_`` bound before the
  probe is seen too; on older torch ``clip_grad_norm_`` itself is wrapped;
- ``state``: before the first optimizer step of the process and before the first step after a
  checkpoint was written, fingerprints of the training state (L1 norms: the optimized weights, each
  optimizer state tensor kind per param group such as ``exp_avg``, the optimizer's ``step``, and the
  tensors of every module and EMA helper outside the optimizer), for the resume check;
- ``init``: a fingerprint of every parameter before the first update (shape and a few sampled
  values), so a checkpoint's EMA can be recognised as the untouched initial weights;
- ``save``: every ``torch.save`` and ``safetensors.torch.save_file`` (path, top-level keys, tensor and
  non-finite tensor counts, the share of tensors that are the optimized weights, the summary of a
  bare tensor such as generated samples), and ``move`` when that file is renamed (atomic-save
  patterns); with ``$T2S_SMOKE_SNAPSHOTS=N`` a copy of the N latest checkpoint files, and with
  ``$T2S_SMOKE_SNAPSHOT_DIRS=1`` a copy of the N latest checkpoint folders (the folder that holds
  the files written between two optimizer steps, copied at the next step or at exit: before a
  trainer overwrites or deletes it);
- ``max_steps``: with ``$T2S_SMOKE_MAX_STEPS=N``, after the N-th optimizer step the probe raises
  ``SystemExit(0)`` out of ``optimizer.step()``: the trainer's ``finally`` blocks and atexit run;
- ``exception``: uncaught exceptions, also in threads; ``start`` and ``exit`` (with the training
  frameworks loaded, e.g. ``deepspeed``, whose clipping the probe cannot see).

This file imports nothing from ``optimizer_tool`` (it runs under the trainer's interpreter, which
may not have it) and never lets its own errors reach the trainer: they become ``probe_error`` lines.
"""

from __future__ import annotations

import atexit
import gc
import importlib.util
import json
import os
import shutil
import sys
import threading
import time
import traceback
import warnings
import weakref
from typing import Any, Dict, List, Optional

ENV_LOG = "T2S_SMOKE_PROBE"
ENV_SNAPSHOTS = "T2S_SMOKE_SNAPSHOTS"
ENV_SNAPSHOT_DIRS = "T2S_SMOKE_SNAPSHOT_DIRS"
ENV_MAX_STEPS = "T2S_SMOKE_MAX_STEPS"
SAMPLES_PER_TENSOR = 16
_MAX_KEYS = 64
# Loaded frameworks named in the exit event: their own clipping or checkpointing is out of the probe's sight.
_FRAMEWORKS = ("deepspeed", "accelerate", "lightning", "pytorch_lightning", "diffusers")


def sample_indices(numel: int) -> List[int]:
    """Evenly spaced flat indices; the smoke checks compute the same ones on checkpoint tensors."""
    k = min(SAMPLES_PER_TENSOR, numel)
    if k <= 1:
        return [0] if numel else []
    return [round(i * (numel - 1) / (k - 1)) for i in range(k)]


def sample_values(tensor: Any) -> List[float]:
    import torch

    flat = tensor.detach().reshape(-1)
    idx = sample_indices(flat.numel())
    if not idx:
        return []
    return flat[torch.tensor(idx, device=flat.device)].float().cpu().tolist()


def _total_norm(grads: List[Any]) -> Optional[float]:
    """2-norm over all gradients, as clip_grad_norm_ computes it (float32 accumulation)."""
    import torch

    grads = [g for g in grads if g is not None]
    if not grads:
        return None
    by_device: Dict[Any, List[Any]] = {}
    for g in grads:
        g = g.detach()
        if g.layout != torch.strided:  # sparse embedding gradients: the norm of the stored values
            g = g.coalesce().values()
        by_device.setdefault(g.device, []).append(g)
    norms = []
    for tensors in by_device.values():
        if hasattr(torch, "_foreach_norm"):
            per_tensor = torch._foreach_norm([t.float() for t in tensors], 2.0)
        else:
            per_tensor = [torch.linalg.vector_norm(t.float()) for t in tensors]
        norms.append(torch.linalg.vector_norm(torch.stack(per_tensor)).cpu())
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _l1(tensors: List[Any]) -> float:
    """Sum of |values| over ``tensors`` (float64 on the CPU): one batched norm per device and dtype."""
    import torch

    groups: Dict[Any, List[Any]] = {}
    for t in tensors:
        if t.numel() and not t.is_complex() and t.layout == torch.strided:
            groups.setdefault((t.device, t.dtype), []).append(t.detach())
    total = 0.0
    for (_, dtype), group in groups.items():
        if dtype.is_floating_point and hasattr(torch, "_foreach_norm"):
            norms = torch._foreach_norm(group, 1)
        else:  # integer counters (step, n_averaged), bool flags
            norms = [t.double().abs().sum() for t in group]
        total += float(torch.stack([n.double() for n in norms]).sum().cpu())
    return total


def _outside_optimizer(optimized: set) -> List[Any]:
    """The tensors of every live module and EMA helper that the optimizer does not update: EMA copies
    (AveragedModel, timm ModelEma, ema_pytorch), diffusers ``EMAModel.shadow_params``, buffers, frozen parts."""
    import torch

    seen, out = set(), []
    with warnings.catch_warnings():  # deprecated module attributes (torch.distributed.reduce_op) warn when touched
        warnings.simplefilter("ignore")
        objects = [obj for obj in gc.get_objects() if not isinstance(obj, _PLAIN)]
        owned = [t for obj in objects for t in _own_tensors(obj, torch)]
    for t in owned:
        if isinstance(t, torch.Tensor) and id(t) not in optimized and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


_PLAIN = (dict, list, tuple, set, frozenset, type(len), type(_l1), type)


def _own_tensors(obj: Any, torch: Any) -> List[Any]:
    """A module's own parameters and buffers (not its children's), or an EMA helper's shadow params."""
    if isinstance(obj, _PLAIN):
        return []
    if isinstance(obj, torch.nn.Module):
        return [*obj._parameters.values(), *obj._buffers.values()]
    try:
        attrs = object.__getattribute__(obj, "__dict__")
    except Exception:
        return []
    shadow = attrs.get("shadow_params") if isinstance(attrs, dict) else None
    return list(shadow) if isinstance(shadow, list) else []


def _peak_rss_bytes() -> Optional[int]:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class _EventLog:
    """The JSON-lines file every event goes to; the probe's own errors become ``probe_error`` lines."""

    def __init__(self, log_path: str):
        self.log_path = os.path.abspath(log_path)
        self.lock = threading.RLock()
        self.t0 = time.perf_counter()
        self.pid = os.getpid()
        self.file = None

    def emit(self, event: str, **fields: Any) -> None:
        with self.lock:
            if self.file is None or self.pid != os.getpid():
                # First write, or a forked child (DataLoader worker): own handle, same file (O_APPEND).
                self.pid = os.getpid()
                self.file = open(self.log_path, "a", buffering=1, encoding="utf-8")
            record = {"ev": event, "pid": self.pid, "t": round(time.perf_counter() - self.t0, 6), **fields}
            self.file.write(json.dumps(record, default=str) + "\n")

    def error(self, where: str, exc: BaseException) -> None:
        try:
            self.emit("probe_error", where=where, error=f"{type(exc).__name__}: {exc}")
        except Exception:
            pass

    def memory(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"rss_peak": _peak_rss_bytes()}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            out["cuda_peak"] = torch.cuda.max_memory_allocated()
        return out

    def _guard(self, where: str, fn):
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # the probe must never change what the trainer does
                self.error(where, exc)
            return None

        return call


class _StepRecorder(_EventLog):
    """``init`` and ``step`` events: the losses and clips seen since the previous optimizer step."""

    def __init__(self, log_path: str, max_steps: int = 0):
        super().__init__(log_path)
        self.max_steps = max_steps  # 0: no limit
        self.optimizer_index: Dict[int, int] = {}
        self.step_counts: Dict[int, int] = {}
        self.pending_losses: List[Any] = []
        self.pending_clips: List[Dict[str, Any]] = []
        self.scaled_outputs: Dict[int, Any] = {}  # id(scaled loss) -> unscaled loss
        self.norm_types: Dict[int, float] = {}  # id(total norm from get_total_norm) -> its norm_type
        self.optimizers: Any = weakref.WeakSet()  # every optimizer that stepped: whose weights are live
        self.fingerprinted = False
        self.state_due = True  # the state fingerprint: first step, and first step after a checkpoint

    def _on_backward(self, tensors: Any) -> None:
        import torch

        if isinstance(tensors, torch.Tensor) and tensors.numel() == 1:
            unscaled = self.scaled_outputs.pop(id(tensors), None)
            self.pending_losses.append((unscaled if unscaled is not None else tensors).detach())

    def _on_total_norm(self, total: Any, norm_type: Any) -> None:
        self.norm_types[id(total)] = float(norm_type)

    def _on_clip_with_norm(self, params: List[Any], max_norm: Any, total: Any) -> None:
        """``clip_grads_with_norm_``: where every norm clip of torch >= 2.6 ends; the norm type is the one
        ``get_total_norm`` computed ``total`` with (2 when the trainer computed it some other way)."""
        norm_type = self.norm_types.pop(id(total), 2.0)
        self._on_clip(params, max_norm, norm_type, total)

    def _on_clip(self, params: List[Any], max_norm: Any, norm_type: Any, total: Any) -> None:
        post = _total_norm([p.grad for p in params]) if float(norm_type) == 2.0 else None
        self.pending_clips.append(
            {
                "max_norm": float(max_norm),
                "norm_type": float(norm_type),
                "pre": float(total),
                "post": post,
                "n_params": len(params),
                "_params": params,
            }
        )

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        key = id(optimizer)
        index = self.optimizer_index.setdefault(key, len(self.optimizer_index))
        self.optimizers.add(optimizer)
        if self.state_due and index == 0:
            self.state_due = False
            self.emit("state", opt=index, n=self.step_counts.get(key, 0) + 1, **_state_fingerprint(optimizer))
        if self.fingerprinted:
            return
        self.fingerprinted = True
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.emit("init", params=[{"shape": list(p.shape), "sample": sample_values(p)} for p in params])

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        import torch

        key = id(optimizer)
        index = self.optimizer_index.setdefault(key, len(self.optimizer_index))
        self.step_counts[key] = self.step_counts.get(key, 0) + 1
        losses, self.pending_losses = self.pending_losses, []
        clips, self.pending_clips = self.pending_clips, []
        self.scaled_outputs.clear()
        loss = None
        if losses:
            device = losses[0].device
            loss = float(torch.stack([t.float().to(device) for t in losses]).sum())  # one sync per step
        groups = optimizer.param_groups
        grads = [p.grad for g in groups for p in g["params"]]
        for clip in clips:
            params = clip.pop("_params")
            # Unchanged gradients give the post-clip norm again; GradScaler.unscale_ after the clip does not.
            clip["at_step"] = _total_norm([p.grad for p in params]) if clip["norm_type"] == 2.0 else None
        self.emit(
            "step",
            opt=index,
            n=self.step_counts[key],
            loss=loss,
            backward_calls=len(losses),
            lr=[float(g["lr"]) for g in groups if "lr" in g],
            # LR schedulers store the configured LR as initial_lr; OneCycleLR peaks at max_lr.
            base_lr=[float(g.get("max_lr", g.get("initial_lr", g.get("lr")))) for g in groups if "lr" in g],
            scheduled=any("initial_lr" in g for g in groups),
            grad_norm=_total_norm(grads),
            clips=clips,
            **self.memory(),
        )

    def _main_step(self) -> int:
        counts = list(self.step_counts.values())
        return counts[0] if counts else 0

    def _stop_at_max_steps(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """``--max-steps``: out of ``optimizer.step()`` once the first optimizer made N steps. SystemExit(0),
        not an error: the trainer's ``finally`` blocks and atexit handlers run, ``except Exception`` lets it pass."""
        if self.max_steps and self.optimizer_index.get(id(optimizer)) == 0:
            if self.step_counts.get(id(optimizer), 0) >= self.max_steps:
                self.emit("max_steps", steps=self.max_steps)
                self.max_steps = 0  # once: a finally block that steps again must not be stopped twice
                raise SystemExit(0)


def _state_fingerprint(optimizer: Any) -> Dict[str, Any]:
    """L1 norms of what a resumed run must restore, read before an optimizer step (the gradients of that
    step do not enter): the optimized weights, per param group each optimizer state kind (exp_avg,
    exp_avg_sq, momentum_buffer ...) and the largest ``step``, and every tensor outside the optimizer."""
    import torch

    params = [p for g in optimizer.param_groups for p in g["params"]]
    groups, steps = [], []
    for group in optimizer.param_groups:
        kinds: Dict[str, List[Any]] = {}
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if name == "step":
                    steps.append(float(value))
                elif isinstance(value, torch.Tensor):
                    kinds.setdefault(str(name), []).append(value)
        groups.append({name: _l1(tensors) for name, tensors in sorted(kinds.items())})
    return {
        "weights": _l1(params),
        "moments": groups,
        "opt_step": max(steps) if steps else None,
        "outside": _l1(_outside_optimizer({id(p) for p in params})),
    }


class Probe(_StepRecorder):
    """The probe of one process: patches torch once it is imported; adds ``save`` / ``move`` events
    (with snapshots) and the process events ``exception`` and ``exit``."""

    def __init__(self, log_path: str, snapshots: int = 0, snapshot_dirs: bool = False, max_steps: int = 0):
        super().__init__(log_path, max_steps)
        self.snapshots = snapshots
        self.snapshot_dirs = snapshot_dirs
        self.snapshot_dir = os.path.join(os.path.dirname(self.log_path), "snapshots")
        self.saved_paths: set = set()
        self.snapshot_paths: List[str] = []
        self.burst: List[str] = []  # checkpoint files written since the last optimizer step
        self.installed = False

    # ------------------------------------------------------------------ hooks

    def install(self, torch: Any) -> None:
        """Patch torch; called once torch is imported."""
        if self.installed:
            return
        self.installed = True
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        register_optimizer_step_pre_hook(self._guard("snapshot_dir", self._snapshot_burst))
        register_optimizer_step_pre_hook(self._guard("optimizer_pre_hook", self._before_step))
        register_optimizer_step_post_hook(self._guard("optimizer_post_hook", self._after_step))
        register_optimizer_step_post_hook(self._stop_at_max_steps)  # unguarded: its SystemExit must pass
        _patch_backward(self, torch)
        _patch_clipping(self, torch)
        _patch_grad_scaler(self, torch)
        _patch_save(self, torch)
        _patch_moves(self)
        self.emit("torch", version=torch.__version__, cuda=torch.cuda.is_available())

    # ------------------------------------------------------------------ checkpoints

    def _on_save(self, obj: Any, f: Any) -> None:
        import torch

        path = os.path.abspath(os.fspath(f)) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", None)
        if not isinstance(path, str):
            return  # serialization into memory (BytesIO): not a checkpoint, and may run often
        fields: Dict[str, Any] = {"path": path, "type": type(obj).__name__, "step": self._main_step()}
        if isinstance(obj, torch.Tensor):
            fields["tensor"] = _tensor_summary(obj)
        else:
            fields.update(_dict_summary(obj))
        self._saved(obj, path, fields)

    def _on_safetensors_save(self, tensors: Any, filename: Any) -> None:
        """``safetensors.torch.save_file``: a dict of tensors; which of them are the optimized weights."""
        path = os.path.abspath(os.fspath(filename))
        fields: Dict[str, Any] = {"path": path, "type": "safetensors", "step": self._main_step()}
        fields.update(_dict_summary(tensors))
        fields["optimized"] = self._optimized_share(tensors.values())
        self._saved(tensors, path, fields)

    def _optimized_share(self, tensors: Any) -> float:
        """Share of ``tensors`` that are (views of) the parameters an optimizer updates: 1 for the live model's
        state dict, 0 for an EMA copy. Compared by storage address, as a state dict shares the parameters'."""
        if not self.optimizers:
            return 0.0
        live = {p.data_ptr() for opt in self.optimizers for g in opt.param_groups for p in g["params"]}
        tensors = [t for t in tensors if hasattr(t, "data_ptr") and t.numel()]
        return sum(1 for t in tensors if t.data_ptr() in live) / len(tensors) if tensors else 0.0

    def _saved(self, obj: Any, path: str, fields: Dict[str, Any]) -> None:
        self.saved_paths.add(path)
        if isinstance(obj, dict):
            self.state_due = True  # a checkpoint: fingerprint the state again before the next step
            self.burst.append(path)
        if self.snapshots and not self.snapshot_dirs and isinstance(obj, dict) and os.path.isfile(path):
            fields["snapshot"] = self._snapshot(path, fields["step"])
        self.emit("save", **fields)

    def _snapshot_burst(self, *_: Any) -> None:
        """Copy the folder that holds the checkpoint files written since the last step (their common
        folder), once they are complete: at the next optimizer step, or at exit."""
        burst, self.burst = self.burst, []
        if not (self.snapshots and self.snapshot_dirs and burst):
            return
        folder = os.path.commonpath([os.path.dirname(p) for p in burst])
        if os.path.isdir(folder):
            copy = self._snapshot(folder, self._main_step())
            self.emit("snapshot_dir", dir=folder, snapshot=copy, step=self._main_step())

    def _snapshot(self, path: str, step: int) -> str:
        """Keep a copy: trainers overwrite one checkpoint.pt, and the resume check needs an older one."""
        os.makedirs(self.snapshot_dir, exist_ok=True)
        copy = os.path.join(
            self.snapshot_dir, f"step{step:07d}_{len(self.snapshot_paths):03d}_{os.path.basename(path)}"
        )
        if os.path.isdir(path):
            shutil.copytree(path, copy)
        else:
            shutil.copyfile(path, copy)
        self.snapshot_paths.append(copy)
        while len(self.snapshot_paths) > self.snapshots:
            old = self.snapshot_paths.pop(0)
            if os.path.isdir(old):
                shutil.rmtree(old, ignore_errors=True)
            elif os.path.exists(old):
                os.remove(old)
        return copy

    def _on_move(self, src: Any, dst: Any) -> None:
        src_path = os.path.abspath(os.fspath(src))
        if src_path in self.saved_paths:
            dst_path = os.path.abspath(os.fspath(dst))
            self.saved_paths.discard(src_path)
            self.saved_paths.add(dst_path)
            self.emit("move", src=src_path, dst=dst_path)

    # ------------------------------------------------------------------ process events

    def on_exception(self, exc_type: Any, exc: Any, tb: Any, thread: str) -> None:
        if exc_type is None or issubclass(exc_type, SystemExit):
            return
        lines = traceback.format_exception(exc_type, exc, tb)
        self.emit(
            "exception",
            type=exc_type.__name__,
            message=str(exc)[:2000],
            thread=thread,
            traceback="".join(lines)[-4000:],
        )

    def on_exit(self) -> None:
        self._guard("snapshot_dir", self._snapshot_burst)()
        frameworks = [name for name in _FRAMEWORKS if name in sys.modules]
        self.emit("exit", steps=self._main_step(), frameworks=frameworks, **self.memory())


# ---------------------------------------------------------------------------- patches
# Each wraps one torch (or os) entry point: the original runs first, then the probe's guarded hook.


def _patch_backward(probe: Probe, torch: Any) -> None:
    # Tensor.backward calls torch.autograd.backward, so one patch sees both spellings.
    original_backward = torch.autograd.backward

    def backward(tensors, *args, **kwargs):
        probe._guard("backward", probe._on_backward)(tensors)
        return original_backward(tensors, *args, **kwargs)

    torch.autograd.backward = backward


def _patch_clipping(probe: Probe, torch: Any) -> None:
    """torch >= 2.6: every norm clip (``clip_grad_norm_``, accelerate's, Lightning's, a trainer's own
    ``get_total_norm`` + ``clip_grads_with_norm_``) ends in ``clip_grad._clip_grads_with_norm_``, which
    ``clip_grad_norm_`` looks up at each call: wrapping it sees a ``clip_grad_norm_`` bound anywhere,
    before the probe too. Older torch: ``clip_grad_norm_`` itself."""
    import torch.nn.utils as nn_utils
    import torch.nn.utils.clip_grad as clip_grad

    if not hasattr(clip_grad, "_clip_grads_with_norm_"):
        _patch_clip_grad_norm(probe, torch)
        return
    original_total = clip_grad._get_total_norm
    original_clip = clip_grad._clip_grads_with_norm_

    def get_total_norm(tensors, norm_type=2.0, *args, **kwargs):
        total = original_total(tensors, norm_type, *args, **kwargs)
        probe._guard("get_total_norm", probe._on_total_norm)(total, norm_type)
        return total

    def clip_grads_with_norm_(parameters, max_norm, total_norm, *args, **kwargs):
        params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
        result = original_clip(params, max_norm, total_norm, *args, **kwargs)
        probe._guard("clip_grads_with_norm_", probe._on_clip_with_norm)(params, max_norm, total_norm)
        return result

    for module, name, wrapper, original in (
        (clip_grad, "_get_total_norm", get_total_norm, original_total),
        (nn_utils, "get_total_norm", get_total_norm, original_total),
        (clip_grad, "_clip_grads_with_norm_", clip_grads_with_norm_, original_clip),
        (nn_utils, "clip_grads_with_norm_", clip_grads_with_norm_, original_clip),
    ):
        wrapper.__wrapped__ = original
        if getattr(module, name, None) is original:
            setattr(module, name, wrapper)


def _patch_clip_grad_norm(probe: Probe, torch: Any) -> None:
    import torch.nn.utils.clip_grad as clip_grad

    original_clip = clip_grad.clip_grad_norm_

    def clip_grad_norm_(parameters, max_norm, norm_type=2.0, *args, **kwargs):
        # A generator would be exhausted by the clip and then by our post-clip norm.
        params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
        total = original_clip(params, max_norm, norm_type, *args, **kwargs)
        probe._guard("clip_grad_norm_", probe._on_clip)(params, max_norm, norm_type, total)
        return total

    clip_grad_norm_.__wrapped__ = original_clip
    clip_grad.clip_grad_norm_ = clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = clip_grad_norm_


def _patch_safetensors(probe: Probe, module: Any) -> None:
    """``safetensors.torch.save_file``: accelerate ``save_state``, diffusers ``save_pretrained``."""
    _wrap_save(module, "save_file", probe._guard("safetensors.save_file", probe._on_safetensors_save))


def _wrap_save(module: Any, name: str, hook: Any) -> None:
    """``module.name(obj, f, ...)`` saves first, then calls ``hook(obj, f)``."""
    original = getattr(module, name)

    def save(obj, f, *args, **kwargs):
        result = original(obj, f, *args, **kwargs)
        hook(obj, f)
        return result

    save.__wrapped__ = original
    setattr(module, name, save)


def _patch_grad_scaler(probe: Probe, torch: Any) -> None:
    from torch.amp.grad_scaler import GradScaler

    original_scale = GradScaler.scale

    def scale(scaler, outputs):
        scaled = original_scale(scaler, outputs)
        if isinstance(outputs, torch.Tensor) and scaled is not outputs:
            probe.scaled_outputs[id(scaled)] = outputs.detach()
        return scaled

    GradScaler.scale = scale


def _patch_save(probe: Probe, torch: Any) -> None:
    _wrap_save(torch, "save", probe._guard("torch.save", probe._on_save))


def _patch_moves(probe: Probe) -> None:
    for name in ("replace", "rename"):
        original = getattr(os, name)

        def moved(src, dst, *args, _original=original, **kwargs):
            result = _original(src, dst, *args, **kwargs)
            if probe.saved_paths:
                probe._guard("os.replace", probe._on_move)(src, dst)
            return result

        setattr(os, name, moved)


def _dict_summary(obj: Any) -> Dict[str, Any]:
    """Tensor and non-finite tensor counts of a saved container, and its first keys when it is a dict."""
    import torch

    tensors = list(_iter_tensors(obj))
    floating = [t for t in tensors if t.is_floating_point() or t.is_complex()]
    nonfinite = 0
    if floating:
        flags = [(~torch.isfinite(t.detach())).any().cpu() for t in floating]
        nonfinite = int(torch.stack(flags).sum())
    fields: Dict[str, Any] = {"n_tensors": len(tensors), "n_nonfinite": nonfinite}
    if isinstance(obj, dict):
        fields["keys"] = [str(k) for k in list(obj)[:_MAX_KEYS]]
    return fields


def _tensor_summary(t: Any) -> Dict[str, Any]:
    import torch

    summary: Dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
    if t.numel() and (t.is_floating_point() or t.is_complex()):
        x = t.detach().float()
        finite = torch.isfinite(x)
        summary["n_nonfinite"] = int((~finite).sum())
        values = x[finite]
        if values.numel():
            summary.update(
                min=float(values.min()),
                max=float(values.max()),
                mean=float(values.mean()),
                std=float(values.std()) if values.numel() > 1 else 0.0,
            )
    return summary


def _iter_tensors(obj: Any, depth: int = 0):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth < 8 and isinstance(obj, dict):
        for value in obj.values():
            yield from _iter_tensors(value, depth + 1)
    elif depth < 8 and isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _iter_tensors(value, depth + 1)


class _AfterImport:
    """Meta-path finder that runs a hook right after a module's import completes: the probe's patches of
    ``torch`` and ``safetensors.torch`` are in place before the trainer binds any of their names."""

    def __init__(self, hooks: Dict[str, Any], on_error: Any):
        self.hooks = dict(hooks)  # module name -> callable(module)
        self.on_error = on_error
        self.busy = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname not in self.hooks or self.busy:
            return None
        self.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original_exec = spec.loader.exec_module
        hook = self.hooks.pop(fullname)

        def exec_module(module):
            original_exec(module)
            if not self.hooks and self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                hook(module)
            except Exception as exc:
                self.on_error(fullname, exc)

        spec.loader.exec_module = exec_module  # this import's loader instance only
        return spec


def activate(log_path: str, snapshots: int = 0, snapshot_dirs: bool = False, max_steps: int = 0) -> Probe:
    """Start recording into ``log_path``; idempotent (sitecustomize and the launcher may both call it)."""
    # Kept on ``sys``: the launcher runs this file as ``__main__`` while sitecustomize loads it under
    # another name, and the two copies must share one probe.
    existing = getattr(sys, "_t2s_smoke_probe", None)
    if existing is not None:
        return existing
    probe = Probe(log_path, snapshots, snapshot_dirs, max_steps)
    sys._t2s_smoke_probe = probe
    probe.emit("start", argv=list(sys.argv), cwd=os.getcwd(), python=sys.executable)

    previous_hook = sys.excepthook

    def excepthook(exc_type, exc, tb):
        probe._guard("excepthook", probe.on_exception)(exc_type, exc, tb, "MainThread")
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook
    previous_thread_hook = threading.excepthook

    def thread_excepthook(args):
        name = args.thread.name if args.thread is not None else "?"
        probe._guard("threading.excepthook", probe.on_exception)(
            args.exc_type, args.exc_value, args.exc_traceback, name
        )
        previous_thread_hook(args)

    threading.excepthook = thread_excepthook
    atexit.register(probe._guard("atexit", probe.on_exit))
    hooks = {"torch": probe.install, "safetensors.torch": lambda module: _patch_safetensors(probe, module)}
    for name in [name for name in hooks if name in sys.modules]:
        hooks.pop(name)(sys.modules[name])
    if hooks:
        sys.meta_path.insert(0, _AfterImport(hooks, probe.error))
    return probe


def activate_from_env() -> Optional[Probe]:
    path = os.environ.get(ENV_LOG)
    if not path:
        return None
    return activate(path, _env_int(ENV_SNAPSHOTS), os.environ.get(ENV_SNAPSHOT_DIRS) == "1", _env_int(ENV_MAX_STEPS))


def _env_int(name: str) -> int:
    try:
        return max(0, int(os.environ.get(name, "0") or 0))
    except ValueError:
        return 0


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m optimizer_tool.smoke.probe [--log FILE] (SCRIPT | -m MODULE) [ARGS...]``"""
    import runpy

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "--log":
        os.environ[ENV_LOG] = args[1]
        args = args[2:]
    if not args or (args[0] == "-m" and len(args) < 2):
        sys.exit("usage: python -m optimizer_tool.smoke.probe [--log FILE] (SCRIPT | -m MODULE) [ARGS...]")
    if not os.environ.get(ENV_LOG):
        sys.exit(f"optimizer_tool.smoke.probe: set ${ENV_LOG} or pass --log FILE")
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        activate_from_env()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))  # as `python SCRIPT` would
        activate_from_env()
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
