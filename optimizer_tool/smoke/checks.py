"""One function per smoke check; each returns a :class:`Row` with a status and the measured value.

A check is ``n/a`` when the run gives it nothing to judge (no clipping configured or seen, no EMA
in the checkpoint, no resume command, a run stopped before its first optimizer step), never to hide
a failure: the row says what was missing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from optimizer_tool.smoke import media
from optimizer_tool.smoke.checkpoint import (
    CheckpointNotJudged,
    CheckpointUnreadable,
    Unpickler,
    describe_keys,
    find_ema_state,
    find_model_state,
    load_checkpoint_files,
    pair_ema_with_model,
)
from optimizer_tool.smoke.probe import sample_values
from optimizer_tool.smoke.records import ProbeRecord, checkpoint_files
from optimizer_tool.smoke.runner import RunResult

PASS, FAIL, NA = "pass", "fail", "n/a"
WARN = "warn"  # measured and reported, not a failure (bit-exact resume without --exact-resume)

# Row titles for the table, in report order; the keys are stable ids for --json consumers.
TITLES = {
    "exit": "exit 0, no exception",
    "finite": "no NaN/inf",
    "loss_falls": "loss falls",
    "lr_schedule": "lr schedule",
    "grad_clipping": "grad clipping",
    "ema_checkpoint": "EMA in checkpoint",
    "resume_state": "resume: state restored",
    "resume_exact": "resume: bit-exact",
    "sample": "sample",
    "resources": "time, memory",
}

# Judged on the optimizer steps of the training run: not applicable to a run that stopped before step 1.
STEP_CHECKS = ("finite", "loss_falls", "lr_schedule", "grad_clipping", "ema_checkpoint")

# Relative slack for float comparisons of values the trainer computed itself (lr, norms).
_REL = 1e-6
# Relative slack for the state fingerprints of two processes (same values, summed on the same device).
STATE_RTOL = 1e-5
RESUME_CHECKS = ("resume_state", "resume_exact")


@dataclass
class Row:
    key: str  # stable id for --json consumers
    title: str
    status: str
    value: str
    detail: str = ""
    data: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Expectations:
    """What the configuration says the run should show; ``None`` = not known (judged from the run)."""

    base_lr: Optional[float] = None
    warmup_steps: Optional[int] = None
    max_grad_norm: Optional[float] = None  # <= 0: clipping off
    ema_on: Optional[bool] = None
    sample_shape: Optional[Tuple[int, ...]] = None
    max_memory: Optional[int] = None  # bytes
    min_loss_drop: float = 0.05
    resume_rtol: float = 1e-3
    exact_resume: bool = False  # a first resumed step whose loss differs fails the run (else: warn)


def fmt(x: Optional[float], digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def unreached(run: RunResult, record: ProbeRecord) -> str:
    """Why the steps cannot be judged: the run was stopped or failed before its first optimizer step.

    '' when it recorded a step, or exited 0 without one (then nothing was trained: the checks fail)."""
    if record.steps or run.ok:
        return ""
    if run.start_error:
        how = "did not start" if not run.timed_out else "was not started: --timeout reached"
    elif run.timed_out:
        how = f"was stopped by --timeout after {run.wall_s:.1f} s"
    elif run.interrupted:
        how = f"was interrupted after {run.wall_s:.1f} s"
    else:
        how = f"ended: {run.describe()}"
    return f"did not reach step 1: the run {how}"


def not_judged(keys: Sequence[str], why: str) -> List[Row]:
    return [Row(key, TITLES[key], NA, why) for key in keys]


# ---------------------------------------------------------------------------- exit


def check_exit(run: RunResult, record: ProbeRecord) -> Row:
    title = TITLES["exit"]
    problems = []
    if not run.ok:
        problems.append(run.describe())
    for exc in record.exceptions:
        where = "" if exc.get("thread") == "MainThread" else f" in thread {exc.get('thread')}"
        problems.append(f"uncaught {exc.get('type')}{where}: {exc.get('message', '')[:200]}")
    detail = ""
    if problems and not run.timed_out and not run.interrupted:
        detail = run.stderr_tail(6)
    if not record.started and run.ok:
        problems.append(
            "the probe did not load in the training process (python -I / -E ignore PYTHONPATH; "
            "start it as `python -m optimizer_tool.smoke.probe SCRIPT ...`)"
        )
    data = {
        "returncode": run.returncode,
        "timed_out": run.timed_out,
        "interrupted": run.interrupted,
        "exceptions": [e.get("type") for e in record.exceptions],
        "wall_s": round(run.wall_s, 2),
    }
    data["max_steps"] = record.max_steps
    stopped = f"; stopped after {record.max_steps} optimizer steps by --max-steps" if record.max_steps else ""
    if problems:
        return Row("exit", title, FAIL, "; ".join(problems) + stopped, detail, data)
    return Row(
        "exit", title, PASS, f"exit 0 after {run.wall_s:.1f} s, {len(record.steps)} optimizer steps{stopped}", "", data
    )


# ---------------------------------------------------------------------------- finite


def check_finite(record: ProbeRecord) -> Row:
    title = TITLES["finite"]
    steps = record.steps
    if not steps:
        return Row(
            "finite", title, FAIL, "no optimizer step recorded", "nothing was trained, or the probe did not load"
        )
    problems, data = [], {}
    first_loss = next((s["n"] for s in steps if s.get("loss") is not None and not _finite(s["loss"])), None)
    first_grad = next((s["n"] for s in steps if s.get("grad_norm") is not None and not _finite(s["grad_norm"])), None)
    if first_loss is not None:
        bad = sum(1 for s in steps if s.get("loss") is not None and not _finite(s["loss"]))
        value = next(s["loss"] for s in steps if s["n"] == first_loss)
        problems.append(f"loss {value} at step {first_loss} ({bad} of {len(steps)} steps non-finite)")
    if first_grad is not None:
        bad = sum(1 for s in steps if s.get("grad_norm") is not None and not _finite(s["grad_norm"]))
        problems.append(f"gradient norm non-finite from step {first_grad} ({bad} steps)")
    broken_saves = [s for s in record.checkpoints if s.get("n_nonfinite")]
    if broken_saves:
        last = broken_saves[-1]
        problems.append(
            f"{last['n_nonfinite']} of {last['n_tensors']} tensors non-finite in checkpoint "
            f"{Path(str(last.get('final_path'))).name} (step {last.get('step')})"
        )
    data.update(first_nonfinite_loss_step=first_loss, first_nonfinite_grad_step=first_grad)
    if problems:
        return Row("finite", title, FAIL, "; ".join(problems), "", data)
    losses = [s["loss"] for s in steps if s.get("loss") is not None]
    norms = [s["grad_norm"] for s in steps if s.get("grad_norm") is not None]
    if not losses:
        return Row("finite", title, FAIL, "no loss recorded: backward() was never called on a scalar", "", data)
    return Row(
        "finite",
        title,
        PASS,
        f"{len(steps)} steps finite: loss {fmt(min(losses))}..{fmt(max(losses))}, "
        f"grad norm {fmt(min(norms)) if norms else '-'}..{fmt(max(norms)) if norms else '-'}",
        "",
        data,
    )


# ---------------------------------------------------------------------------- loss


def rank_prob_lower(later: Sequence[float], earlier: Sequence[float]) -> float:
    """P(a value from ``later`` < one from ``earlier``), ties half: the Mann-Whitney U statistic / n1 n2."""
    wins = sum((1.0 if b < a else 0.5 if b == a else 0.0) for a in earlier for b in later)
    return wins / (len(earlier) * len(later))


def check_loss_falls(record: ProbeRecord, min_drop: float) -> Row:
    title = TITLES["loss_falls"]
    losses = [(s["n"], s["loss"]) for s in record.steps if s.get("loss") is not None]
    if len(losses) < 4:
        return Row(
            "loss_falls",
            title,
            NA if not losses else FAIL,
            f"{len(losses)} steps with a loss: too few to compare",
            "run at least 4 optimizer steps",
        )
    w = max(2, len(losses) // 4)
    first, last = losses[:w], losses[-w:]
    first_v, last_v = [v for _, v in first], [v for _, v in last]
    span = f"steps {first[0][0]}-{first[-1][0]} vs {last[0][0]}-{last[-1][0]}"
    if not all(map(_finite, first_v + last_v)):
        return Row("loss_falls", title, FAIL, f"non-finite loss in the compared windows ({span})", "", {"window": w})
    m_first, m_last = statistics.median(first_v), statistics.median(last_v)
    drop = (m_first - m_last) / abs(m_first) if m_first else 0.0
    p_lower = rank_prob_lower(last_v, first_v)
    data = {"window": w, "median_first": m_first, "median_last": m_last, "drop": drop, "p_last_lower": p_lower}
    value = f"median {fmt(m_first)} -> {fmt(m_last)} ({-drop:+.1%}), P(last < first) = {p_lower:.2f}; {span}"
    # Both: the typical value fell enough, and the fall is consistent rather than one lucky batch.
    ok = drop >= min_drop and p_lower >= 0.75
    detail = "" if ok else f"needs a median drop of at least {min_drop:.0%} and P(last < first) >= 0.75"
    return Row("loss_falls", title, PASS if ok else FAIL, value, detail, data)


# ---------------------------------------------------------------------------- lr


def check_lr_schedule(record: ProbeRecord, expect: Expectations) -> Row:
    title = TITLES["lr_schedule"]
    steps = [s for s in record.steps if s.get("lr")]
    if len(steps) < 2:
        return Row("lr_schedule", title, NA, f"{len(steps)} steps with an lr: too few", "")
    lrs = [s["lr"][0] for s in steps]
    n = len(lrs)
    if not all(map(_finite, lrs)):
        bad = next(s["n"] for s, v in zip(steps, lrs) if not _finite(v))
        return Row("lr_schedule", title, FAIL, f"lr non-finite at step {bad}", "")
    base = (
        expect.base_lr
        if expect.base_lr is not None
        else (steps[0]["base_lr"][0] if steps[0].get("scheduled") else None)
    )
    warmup = expect.warmup_steps
    peak = max(lrs)
    peak_i = next(i for i, v in enumerate(lrs) if v >= peak * (1 - _REL))
    data, curve = _lr_summary(steps, lrs, base, warmup, peak_i)

    if not steps[0].get("scheduled") and max(lrs) - min(lrs) <= _REL * peak and expect.warmup_steps is None:
        return Row("lr_schedule", title, NA, f"constant lr {fmt(peak, 3)}: no schedule configured", "", data)

    problems = _lr_shape_problems(steps, lrs, base, peak, peak_i)
    if warmup:
        if n <= warmup:
            if problems:
                return Row("lr_schedule", title, FAIL, "; ".join(problems), curve, data)
            return Row(
                "lr_schedule", title, NA, f"run of {n} steps ends inside the {warmup}-step warm-up ({curve})", "", data
            )
        problems += _lr_warmup_problems(steps, lrs, peak, peak_i, warmup)
    else:
        if peak_i == n - 1 and lrs[-1] > lrs[0] * (1 + _REL) and not problems:
            return Row(
                "lr_schedule",
                title,
                NA,
                f"still rising at the last step ({curve}): the warm-up is longer than this run, or give --warmup-steps",
                "",
                data,
            )
    if problems:
        return Row("lr_schedule", title, FAIL, "; ".join(problems), curve, data)
    warm = f"{warmup}-step warm-up, " if warmup else ("no warm-up, " if peak_i == 0 else "")
    # Without a known warm-up a schedule that stays at its peak is a choice (warm-up then constant), not a
    # malfunction: said, not failed (`check` judges the shape: LR002).
    flat = "; no decay within the run" if not warmup and not lrs[-1] < peak * (1 - _REL) else ""
    return Row("lr_schedule", title, PASS, f"{warm}{curve}{flat}", "", data)


def _lr_summary(
    steps: List[Dict[str, Any]], lrs: List[float], base: Optional[float], warmup: Optional[int], peak_i: int
) -> Tuple[Dict[str, Any], str]:
    """The measured schedule for --json, and as the row shows it: first lr -> peak -> last lr."""
    peak = max(lrs)
    data = {
        "base_lr": base,
        "warmup_steps": warmup,
        "peak_lr": peak,
        "peak_step": steps[peak_i]["n"],
        "first_lr": lrs[0],
        "last_lr": lrs[-1],
    }
    curve = (
        f"{fmt(lrs[0], 3)} -> peak {fmt(peak, 3)} at step {steps[peak_i]['n']} "
        f"-> {fmt(lrs[-1], 3)} at step {steps[-1]['n']}"
    )
    return data, curve


def _lr_shape_problems(
    steps: List[Dict[str, Any]], lrs: List[float], base: Optional[float], peak: float, peak_i: int
) -> List[str]:
    """What no schedule does: rise above the configured lr, fall before the peak, rise again after it."""
    problems = []
    if base is not None and peak > base * (1 + _REL):
        over = next(i for i, v in enumerate(lrs) if v > base * (1 + _REL))
        problems.append(
            f"lr exceeds the configured {fmt(base, 3)} from step {steps[over]['n']} and reaches "
            f"{fmt(peak, 3)} ({peak / base:.3g}x): the warm-up never stops rising"
        )
    rises_to_peak = all(b >= a * (1 - _REL) for a, b in zip(lrs[:peak_i], lrs[1 : peak_i + 1]))
    decay = lrs[peak_i:]
    rebound = next((peak_i + i + 1 for i, (a, b) in enumerate(zip(decay, decay[1:])) if b > a * (1 + _REL)), None)
    if not rises_to_peak:
        problems.append("lr falls before its peak")
    if rebound is not None:
        problems.append(
            f"lr rises again at step {steps[rebound]['n']} after the peak "
            f"({fmt(lrs[rebound - 1], 3)} -> {fmt(lrs[rebound], 3)})"
        )
    return problems


def _lr_warmup_problems(
    steps: List[Dict[str, Any]], lrs: List[float], peak: float, peak_i: int, warmup: int
) -> List[str]:
    """For a run longer than the configured warm-up: a rise during it, the peak where it ends, a decay after."""
    n = len(lrs)
    problems = []
    peak_step = steps[peak_i]["n"]
    # Stepping the scheduler before the optimizer shifts the curve by one step.
    if abs(peak_step - warmup) > 1:
        problems.append(f"peaks at step {peak_step}, configured warm-up ends at step {warmup}")
    if warmup > 1 and not lrs[min(warmup, n) - 1] > lrs[0] * (1 + _REL):
        problems.append(f"no rise during the {warmup}-step warm-up")
    if not lrs[-1] < peak * (1 - _REL):
        problems.append("no decay after the warm-up")
    return problems


# ---------------------------------------------------------------------------- clipping


def check_grad_clipping(record: ProbeRecord, expect: Expectations) -> Row:
    title = TITLES["grad_clipping"]
    configured = expect.max_grad_norm
    clipped = [(s["n"], c) for s in record.steps for c in s.get("clips") or []]
    if not clipped:
        return _no_clip_row(record, configured)
    problems = []
    norms = {c["max_norm"] for _, c in clipped}
    if configured is not None and configured > 0 and any(abs(m - configured) > _REL * configured for m in norms):
        problems.append(f"clips at max_norm {', '.join(fmt(m) for m in sorted(norms))}, configured {fmt(configured)}")
    unclipped = [s["n"] for s in record.steps if not s.get("clips")]
    if unclipped:
        problems.append(f"{len(unclipped)} of {len(record.steps)} steps without clipping (first: step {unclipped[0]})")
    active = 0
    for step, c in clipped:
        pre, post, at_step, max_norm = c.get("pre"), c.get("post"), c.get("at_step"), c["max_norm"]
        if not (_finite(pre) and _finite(post)):
            continue  # reported by the finite check
        if pre > max_norm:
            active += 1
        if post > max_norm * (1 + 1e-3) + 1e-6:
            problems.append(f"step {step}: norm {fmt(post)} after clipping, above max_norm {fmt(max_norm)}")
            break
        if _finite(at_step) and abs(at_step - post) > 1e-3 * max(post, 1e-12) + 1e-9:
            problems.append(
                f"step {step}: gradients changed between clip_grad_norm_ and optimizer.step() "
                f"(norm {fmt(post)} after clipping, {fmt(at_step)} at the step): clipped before "
                "GradScaler.unscale_, or clipped a copy"
            )
            break
    pres = [c["pre"] for _, c in clipped if _finite(c.get("pre"))]
    posts = [c["post"] for _, c in clipped if _finite(c.get("post"))]
    value = (
        f"max_norm {', '.join(fmt(m) for m in sorted(norms))}; "
        f"pre-clip norm median {fmt(statistics.median(pres)) if pres else '-'}"
        f" (max {fmt(max(pres)) if pres else '-'}), after clipping max {fmt(max(posts)) if posts else '-'}; "
        f"clipping active on {active} of {len(clipped)} calls"
    )
    data = {
        "max_norm": sorted(norms),
        "calls": len(clipped),
        "active": active,
        "max_pre": max(pres) if pres else None,
        "max_post": max(posts) if posts else None,
    }
    if problems:
        return Row("grad_clipping", title, FAIL, "; ".join(problems), value, data)
    return Row("grad_clipping", title, PASS, value, "", data)


def _no_clip_row(record: ProbeRecord, configured: Optional[float]) -> Row:
    """No norm clip seen: clipping is off, unless configured; DeepSpeed clips where the probe cannot see."""
    title = TITLES["grad_clipping"]
    if "deepspeed" in record.frameworks:
        return Row(
            "grad_clipping",
            title,
            NA,
            "not judged: DeepSpeed was loaded; it clips inside engine.step() (gradient_clipping in its config), "
            "which the probe does not see",
            "",
        )
    if configured is not None and configured > 0:
        return Row(
            "grad_clipping",
            title,
            FAIL,
            f"max_grad_norm {fmt(configured)} configured, but no gradient-norm clip was seen on any step "
            f"({CLIP_PATHS})",
            "",
        )
    return Row("grad_clipping", title, NA, f"no gradient-norm clip seen ({CLIP_PATHS}): clipping is off", "")


CLIP_PATHS = "clip_grad_norm_, clip_grads_with_norm_, accelerator.clip_grad_norm_, Lightning gradient_clip_val"


# ---------------------------------------------------------------------------- EMA


@dataclass
class _EmaVsLive:
    """The EMA tensors of a checkpoint against the live tensors they pair with."""

    tensors: int
    values: int
    mean_abs_diff: float
    max_abs_diff: float
    nonfinite: int  # EMA tensors with a NaN or inf
    trained: int  # tensors the run changed (0 when the probe saw no initial weights)
    stale: int  # of those, EMA tensors that still hold their initial values


def check_ema_checkpoint(record: ProbeRecord, expect: Expectations, unpickler: Optional[Unpickler] = None) -> Row:
    """``unpickler``: the separate process for a checkpoint that needs full unpickling (never done here)."""
    title = TITLES["ema_checkpoint"]
    saves = checkpoint_files(record)
    if not saves:
        if expect.ema_on:
            return Row("ema_checkpoint", title, FAIL, "EMA is configured but no checkpoint was written", "")
        return Row("ema_checkpoint", title, NA, "no checkpoint written through torch.save or safetensors", "")
    path = saves[-1]["final_path"]
    try:
        loaded = load_checkpoint_files(saves, unpickler)
    except CheckpointNotJudged as exc:
        return Row("ema_checkpoint", title, NA, f"not judged: {Path(path).name} {exc}", "", {"checkpoint": path})
    except CheckpointUnreadable as exc:
        return Row("ema_checkpoint", title, FAIL, f"checkpoint does not load back: {exc}", "")
    ckpt, load_note, name = loaded.content, loaded.note, loaded.name
    ema_key, ema = find_ema_state(ckpt, loaded.not_optimized)
    if ema_key is None:
        keys = describe_keys(ckpt)
        if expect.ema_on:
            return Row(
                "ema_checkpoint", title, FAIL, f"EMA is configured but {name} has no EMA state (keys: {keys})", ""
            )
        return Row("ema_checkpoint", title, NA, f"EMA off: no EMA state in {name} (keys: {keys})", "")
    model_key, model = find_model_state(ckpt, ema_key, ema)
    pairs = pair_ema_with_model(ema, model)
    if not pairs:
        return Row(
            "ema_checkpoint",
            title,
            FAIL,
            f"{name}[{ema_key!r}] shares no tensor name or shape with the model weights"
            f"{f' in {model_key!r}' if model_key else ''}: it cannot be loaded into the model",
            "",
        )
    compared = _compare_ema(record, pairs)
    data = {
        "checkpoint": loaded.path,
        "ema_key": ema_key,
        "model_key": model_key,
        "tensors": compared.tensors,
        "values": compared.values,
        "mean_abs_diff": compared.mean_abs_diff,
        "max_abs_diff": compared.max_abs_diff,
        "trained_tensors": compared.trained,
        "ema_tensors_at_init": compared.stale,
        "load": load_note,
    }
    return _ema_row(compared, f"{name}[{ema_key!r}] vs [{model_key!r}]", load_note, data)


def _compare_ema(record: ProbeRecord, pairs: List[Tuple[str, Any, Any]]) -> _EmaVsLive:
    """Distances between paired tensors; which ones the run trained, judged by the probe's init fingerprints."""
    import torch

    nonfinite = [n for n, e, _ in pairs if not torch.isfinite(e).all()]
    abs_sum, count, max_diff = 0.0, 0, 0.0
    for _, e, m in pairs:
        diff = (e.double() - m.double()).abs()
        abs_sum += float(diff.sum())
        count += diff.numel()
        max_diff = max(max_diff, float(diff.max())) if diff.numel() else max_diff
    mean_diff = abs_sum / max(count, 1)

    init: Dict[Tuple[int, ...], set] = {}
    for fp in record.init:
        init.setdefault(tuple(fp["shape"]), set()).add(tuple(fp["sample"]))

    def is_initial(t) -> bool:
        return tuple(sample_values(t)) in init.get(tuple(t.shape), ())

    trained = [(n, e, m) for n, e, m in pairs if init and not is_initial(m)]
    stale = [n for n, e, _ in trained if is_initial(e)]
    return _EmaVsLive(len(pairs), count, mean_diff, max_diff, len(nonfinite), len(trained), len(stale))


def _ema_row(ema: _EmaVsLive, where: str, load_note: str, data: Dict[str, Any]) -> Row:
    """An average must be finite, must have moved from the initial weights, and must differ from the live ones."""
    title = TITLES["ema_checkpoint"]
    if ema.nonfinite:
        return Row("ema_checkpoint", title, FAIL, f"{ema.nonfinite} EMA tensors non-finite in {where}", "", data)
    if ema.trained and ema.stale == ema.trained:
        return Row(
            "ema_checkpoint",
            title,
            FAIL,
            f"EMA never updated: all {ema.trained} trained tensors in {where} still hold their initial "
            f"values; mean |EMA - live| = {fmt(ema.mean_abs_diff, 3)}",
            load_note,
            data,
        )
    if ema.mean_abs_diff == 0.0:
        return Row(
            "ema_checkpoint",
            title,
            FAIL,
            f"EMA identical to the live weights in {where}: a copy, not an average",
            load_note,
            data,
        )
    note = (
        f"; {ema.stale} of {ema.trained} trained tensors unchanged (updates below float resolution)"
        if ema.stale
        else ""
    )
    return Row(
        "ema_checkpoint",
        title,
        PASS,
        f"mean |EMA - live| = {fmt(ema.mean_abs_diff, 3)} (max {fmt(ema.max_abs_diff, 3)}) "
        f"over {ema.tensors} tensors in {where}{note}",
        load_note,
        data,
    )


# ---------------------------------------------------------------------------- resume


@dataclass
class ResumeRuns:
    """The uninterrupted run, and the run resumed from its checkpoint of step ``start_step``."""

    straight: ProbeRecord
    run: Optional[RunResult] = None
    resumed: Optional[ProbeRecord] = None
    start_step: Optional[int] = None
    why_not: str = ""  # why there is no resumed run


def check_resume(runs: ResumeRuns, rtol: float, exact: bool) -> List[Row]:
    """Two rows: ``resume_state`` (weights, optimizer moments and step, lr, EMA and other module state equal
    before the first resumed step: pass/fail) and ``resume_exact`` (that step's loss within ``rtol``:
    reported; fails only with ``exact``, as data order and noise need not be restored)."""
    if runs.run is None:
        return not_judged(RESUME_CHECKS, runs.why_not or "no resume run")
    why = _resume_failed(runs)
    if why:
        state = Row("resume_state", TITLES["resume_state"], FAIL, why, runs.run.stderr_tail(6) if runs.run else "")
        return [state] + not_judged(["resume_exact"], f"not judged: {why}")
    return [_resume_state_row(runs), _resume_exact_row(runs, rtol, exact)]


def _resume_failed(runs: ResumeRuns) -> str:
    """Why the resumed run cannot be compared with the uninterrupted one ('' when it can)."""
    if not runs.run.ok:
        return f"resumed run failed: {runs.run.describe()}"
    if runs.resumed is None or not runs.resumed.steps:
        return "resumed run recorded no optimizer step"
    target = runs.start_step + runs.resumed.steps[0]["n"]
    if target not in {s["n"] for s in runs.straight.steps}:
        return f"uninterrupted run has no step {target} to compare with"
    return ""


def _first_lr(step: Dict[str, Any]) -> Optional[float]:
    return (step.get("lr") or [None])[0]


def _resume_state_row(runs: ResumeRuns) -> Row:
    title = TITLES["resume_state"]
    first = runs.resumed.steps[0]
    target = runs.start_step + first["n"]
    ref = next(s for s in runs.straight.steps if s["n"] == target)
    before, after = runs.straight.state_before(target), runs.resumed.state_before(first["n"])
    pairs = [("lr", _first_lr(ref), _first_lr(first))]
    if before is not None and after is not None:
        pairs += state_pairs(before, after)
    differ = [(name, a, b) for name, a, b in pairs if not _same(a, b)]
    data = {
        "checkpoint_step": runs.start_step,
        "compared_step": target,
        "compared": {name: {"uninterrupted": a, "resumed": b} for name, a, b in pairs},
        "differ": [name for name, _, _ in differ],
    }
    if before is None or after is None:
        missing = "uninterrupted" if before is None else "resumed"
        return Row(
            "resume_state",
            title,
            NA if not differ else FAIL,
            f"step {target}: the probe took no state fingerprint before this step of the {missing} run; "
            f"only the lr compared ({fmt(pairs[0][1])} vs {fmt(pairs[0][2])})",
            "",
            data,
        )
    value = f"before step {target}: {len(pairs)} values compared (lr, weights, optimizer state, modules outside it)"
    if differ:
        shown = "; ".join(f"{name} {fmt(a, 8)} uninterrupted vs {fmt(b, 8)} resumed" for name, a, b in differ[:4])
        return Row("resume_state", title, FAIL, f"not restored: {shown}", _RESTORE_HINT, data)
    return Row("resume_state", title, PASS, value + ": all equal", "", data)


_RESTORE_HINT = (
    "weights: model.load_state_dict; optimizer.* and opt_step: optimizer.load_state_dict; lr: the LR scheduler's "
    "state; outside_optimizer: the EMA (and buffers of modules the optimizer does not update)"
)


def state_pairs(before: Dict[str, Any], after: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(name, uninterrupted, resumed) for every value of two state fingerprints."""
    pairs = [
        ("weights", before.get("weights"), after.get("weights")),
        ("opt_step", before.get("opt_step"), after.get("opt_step")),
        ("outside_optimizer", before.get("outside"), after.get("outside")),
    ]
    groups_a, groups_b = before.get("moments") or [], after.get("moments") or []
    for i in range(max(len(groups_a), len(groups_b))):
        a = groups_a[i] if i < len(groups_a) else {}
        b = groups_b[i] if i < len(groups_b) else {}
        pairs += [(f"optimizer.{kind}[group {i}]", a.get(kind), b.get(kind)) for kind in sorted(set(a) | set(b))]
    return pairs


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= STATE_RTOL * max(abs(a), abs(b), 1e-12)


def _resume_exact_row(runs: ResumeRuns, rtol: float, exact: bool) -> Row:
    title = TITLES["resume_exact"]
    by_step = {s["n"]: s for s in runs.straight.steps}
    first = runs.resumed.steps[0]
    target = runs.start_step + first["n"]
    a, b = by_step[target].get("loss"), first.get("loss")
    if not (_finite(a) and _finite(b)):
        return Row("resume_exact", title, FAIL, f"step {target}: loss {a} uninterrupted vs {b} resumed", "")
    rel = abs(b - a) / max(abs(a), 1e-12)
    diffs = []
    for s in runs.resumed.steps:
        ref = by_step.get(runs.start_step + s["n"])
        if ref and _finite(ref.get("loss")) and _finite(s.get("loss")):
            diffs.append(abs(s["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-12))
    data = {
        "checkpoint_step": runs.start_step,
        "compared_step": target,
        "loss_uninterrupted": a,
        "loss_resumed": b,
        "rel_diff": rel,
        "max_rel_diff_all_steps": max(diffs) if diffs else None,
        "steps_compared": len(diffs),
        "exact_required": exact,
    }
    value = (
        f"step {target}: loss {fmt(a, 6)} uninterrupted vs {fmt(b, 6)} resumed (rel diff {rel:.1e}, "
        f"tolerance {rtol:.0e}); max rel diff over {len(diffs)} resumed steps {max(diffs):.1e}"
    )
    if rel <= rtol:
        return Row("resume_exact", title, PASS, value, "", data)
    detail = "first resumed step differs: the RNG state or the data order is not restored" + (
        "" if exact else " (reported only; --exact-resume makes this a failure)"
    )
    return Row("resume_exact", title, FAIL if exact else WARN, value, detail, data)


# ---------------------------------------------------------------------------- sample


def check_sample(
    run: Optional[RunResult],
    saves: Iterable[Dict[str, Any]],
    expected_shape: Optional[Sequence[int]],
    why_not: str = "",
    ema_sampling: Optional[Dict[str, Any]] = None,
    media_files: Sequence[media.MediaFile] = (),
) -> Row:
    """``ema_sampling`` (reference trainer): did zeroing the live weights leave the sample unchanged?
    ``media_files``: sample images and videos the run wrote (each must read back, no blank frame)."""
    title = TITLES["sample"]
    if run is not None and not run.ok:
        return Row("sample", title, FAIL, f"sampling failed: {run.describe()}", run.stderr_tail(6))
    saves = list(saves)
    if not saves and not media_files:
        return Row("sample", title, NA, why_not or "no generated sample saved through torch.save", "")
    problems, values, data = [], [], {}
    if saves:
        problems, value, data = _tensor_sample(saves[-1], expected_shape, ema_sampling)
        values.append(value)
    if media_files:
        problems += media.problems(media_files)
        values.append(media.describe(media_files))
        data["media"] = [f.to_dict() for f in media_files]
    if problems:
        return Row("sample", title, FAIL, "; ".join(problems), "; ".join(values), data)
    return Row("sample", title, PASS, "; ".join(values), "", data)


def _tensor_sample(
    save: Dict[str, Any], expected_shape: Optional[Sequence[int]], ema_sampling: Optional[Dict[str, Any]]
) -> Tuple[List[str], str, Dict[str, Any]]:
    """Problems, the measured value and the data of a sample tensor saved through torch.save."""
    summary = save["tensor"]
    shape = tuple(summary["shape"])
    data = {"path": save.get("final_path"), **summary}
    problems = []
    if expected_shape is not None and shape != tuple(expected_shape):
        problems.append(f"shape {list(shape)}, expected {list(expected_shape)}")
    elif len(shape) < 3 or 0 in shape:
        problems.append(f"shape {list(shape)} is not a batch of images or videos")
    if summary.get("n_nonfinite"):
        problems.append(f"{summary['n_nonfinite']} non-finite values")
    value = (
        f"{Path(str(save.get('final_path'))).name}: shape {list(shape)}, "
        f"values {fmt(summary.get('min'), 3)}..{fmt(summary.get('max'), 3)} (std {fmt(summary.get('std'), 3)})"
    )
    if ema_sampling and "same_with_live_weights_zeroed" in ema_sampling:
        data["ema_sampling"] = ema_sampling
        if ema_sampling["same_with_live_weights_zeroed"]:
            value += "; sampled with the EMA weights (same output with the live weights zeroed)"
        else:
            problems.append(
                "not sampled with the EMA weights: zeroing the live weights changes the sample "
                f"(max diff {fmt(ema_sampling.get('max_abs_diff'), 3)})"
            )
    elif ema_sampling is not None:
        value += "; no EMA in the checkpoint: sampled with the live weights"
    return problems, value, data


# ---------------------------------------------------------------------------- resources


def step_times(record: ProbeRecord) -> List[float]:
    """Seconds between consecutive optimizer steps; the first step (start-up, warm caches) excluded."""
    ts = [s["t"] for s in record.steps]
    return [b - a for a, b in zip(ts, ts[1:])]


def check_resources(record: ProbeRecord, max_memory: Optional[int], unreached: str = "") -> Row:
    """``unreached``: why the run has no step (see :func:`unreached`); then unmeasured memory is n/a."""
    title = TITLES["resources"]
    times = step_times(record)
    mem = record.peak_memory()
    kind, peak = (
        ("CUDA max allocated", mem["cuda_peak"]) if mem["cuda_peak"] is not None else ("peak RSS", mem["rss_peak"])
    )
    data = {
        "median_step_s": statistics.median(times) if times else None,
        "p90_step_s": sorted(times)[int(0.9 * (len(times) - 1))] if times else None,
        "rss_peak": mem["rss_peak"],
        "cuda_peak": mem["cuda_peak"],
        "max_memory": max_memory,
    }
    value = (
        f"median step {fmt(data['median_step_s'], 3)} s (p90 {fmt(data['p90_step_s'], 3)} s); {kind} {fmt_bytes(peak)}"
    )
    if peak is None:
        status = NA if max_memory is None or unreached else FAIL
        return Row("resources", title, status, value, unreached or "memory not measured", data)
    if max_memory is None:
        return Row("resources", title, NA, value, "no --max-memory given", data)
    if peak > max_memory:
        return Row("resources", title, FAIL, f"{value} > --max-memory {fmt_bytes(max_memory)}", "", data)
    return Row("resources", title, PASS, f"{value} <= --max-memory {fmt_bytes(max_memory)}", "", data)
