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
  ``clip_grad_norm_`` call (max_norm, the returned pre-clip norm, the post-clip norm, and the norm
  of the same gradients when the optimizer steps), peak RSS and CUDA memory, elapsed time;
- ``init``: a fingerprint of every parameter before the first update (shape and a few sampled
  values), so a checkpoint's EMA can be recognised as the untouched initial weights;
- ``save``: every ``torch.save`` (path, top-level keys, tensor and non-finite tensor counts, the
  summary of a bare tensor such as generated samples), and ``move`` when that file is renamed
  (atomic-save patterns); with ``$T2S_SMOKE_SNAPSHOTS=N`` a copy of the N latest checkpoints;
- ``exception``: uncaught exceptions, also in threads; ``start`` and ``exit``.

This file imports nothing from ``optimizer_tool`` (it runs under the trainer's interpreter, which
may not have it) and never lets its own errors reach the trainer: they become ``probe_error`` lines.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional

ENV_LOG = "T2S_SMOKE_PROBE"
ENV_SNAPSHOTS = "T2S_SMOKE_SNAPSHOTS"
SAMPLES_PER_TENSOR = 16
_MAX_KEYS = 64


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

    def __init__(self, log_path: str):
        super().__init__(log_path)
        self.optimizer_index: Dict[int, int] = {}
        self.step_counts: Dict[int, int] = {}
        self.pending_losses: List[Any] = []
        self.pending_clips: List[Dict[str, Any]] = []
        self.scaled_outputs: Dict[int, Any] = {}  # id(scaled loss) -> unscaled loss
        self.fingerprinted = False

    def _on_backward(self, tensors: Any) -> None:
        import torch

        if isinstance(tensors, torch.Tensor) and tensors.numel() == 1:
            unscaled = self.scaled_outputs.pop(id(tensors), None)
            self.pending_losses.append((unscaled if unscaled is not None else tensors).detach())

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


class Probe(_StepRecorder):
    """The probe of one process: patches torch once it is imported; adds ``save`` / ``move`` events
    (with snapshots) and the process events ``exception`` and ``exit``."""

    def __init__(self, log_path: str, snapshots: int = 0):
        super().__init__(log_path)
        self.snapshots = snapshots
        self.snapshot_dir = os.path.join(os.path.dirname(self.log_path), "snapshots")
        self.saved_paths: set = set()
        self.snapshot_paths: List[str] = []
        self.installed = False

    # ------------------------------------------------------------------ hooks

    def install(self, torch: Any) -> None:
        """Patch torch; called once torch is imported."""
        if self.installed:
            return
        self.installed = True
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        register_optimizer_step_pre_hook(self._guard("optimizer_pre_hook", self._before_step))
        register_optimizer_step_post_hook(self._guard("optimizer_post_hook", self._after_step))
        _patch_backward(self, torch)
        _patch_clip_grad_norm(self, torch)
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
            tensors = list(_iter_tensors(obj))
            floating = [t for t in tensors if t.is_floating_point() or t.is_complex()]
            nonfinite = 0
            if floating:
                flags = [(~torch.isfinite(t.detach())).any().cpu() for t in floating]
                nonfinite = int(torch.stack(flags).sum())
            fields.update(n_tensors=len(tensors), n_nonfinite=nonfinite)
            if isinstance(obj, dict):
                fields["keys"] = [str(k) for k in list(obj)[:_MAX_KEYS]]
        self.saved_paths.add(path)
        if self.snapshots and isinstance(obj, dict) and os.path.isfile(path):
            fields["snapshot"] = self._snapshot(path, fields["step"])
        self.emit("save", **fields)

    def _snapshot(self, path: str, step: int) -> str:
        """Keep a copy: trainers overwrite one checkpoint.pt, and the resume check needs an older one."""
        os.makedirs(self.snapshot_dir, exist_ok=True)
        copy = os.path.join(
            self.snapshot_dir, f"step{step:07d}_{len(self.snapshot_paths):03d}_{os.path.basename(path)}"
        )
        shutil.copyfile(path, copy)
        self.snapshot_paths.append(copy)
        while len(self.snapshot_paths) > self.snapshots:
            old = self.snapshot_paths.pop(0)
            if os.path.exists(old):
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
        self.emit("exit", steps=self._main_step(), **self.memory())


# ---------------------------------------------------------------------------- patches
# Each wraps one torch (or os) entry point: the original runs first, then the probe's guarded hook.


def _patch_backward(probe: Probe, torch: Any) -> None:
    # Tensor.backward calls torch.autograd.backward, so one patch sees both spellings.
    original_backward = torch.autograd.backward

    def backward(tensors, *args, **kwargs):
        probe._guard("backward", probe._on_backward)(tensors)
        return original_backward(tensors, *args, **kwargs)

    torch.autograd.backward = backward


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
    original_save = torch.save

    def save(obj, f, *args, **kwargs):
        result = original_save(obj, f, *args, **kwargs)
        probe._guard("torch.save", probe._on_save)(obj, f)
        return result

    torch.save = save


def _patch_moves(probe: Probe) -> None:
    for name in ("replace", "rename"):
        original = getattr(os, name)

        def moved(src, dst, *args, _original=original, **kwargs):
            result = _original(src, dst, *args, **kwargs)
            if probe.saved_paths:
                probe._guard("os.replace", probe._on_move)(src, dst)
            return result

        setattr(os, name, moved)


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


class _AfterTorchImport:
    """Meta-path finder that installs the probe right after ``import torch`` completes."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.busy = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname != "torch" or self.busy:
            return None
        self.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                self.probe.install(module)
            except Exception as exc:
                self.probe.error("install", exc)

        spec.loader.exec_module = exec_module  # this import's loader instance only
        return spec


def activate(log_path: str, snapshots: int = 0) -> Probe:
    """Start recording into ``log_path``; idempotent (sitecustomize and the launcher may both call it)."""
    # Kept on ``sys``: the launcher runs this file as ``__main__`` while sitecustomize loads it under
    # another name, and the two copies must share one probe.
    existing = getattr(sys, "_t2s_smoke_probe", None)
    if existing is not None:
        return existing
    probe = Probe(log_path, snapshots)
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
    if "torch" in sys.modules:
        probe.install(sys.modules["torch"])
    else:
        sys.meta_path.insert(0, _AfterTorchImport(probe))
    return probe


def activate_from_env() -> Optional[Probe]:
    path = os.environ.get(ENV_LOG)
    if not path:
        return None
    try:
        snapshots = int(os.environ.get(ENV_SNAPSHOTS, "0") or 0)
    except ValueError:
        snapshots = 0
    return activate(path, snapshots)


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
