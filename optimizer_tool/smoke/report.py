"""Smoke-test output: the summary table (rich), the JSON for CI, the PNG of the curves."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from optimizer_tool.smoke.checks import FAIL, NA, PASS, WARN
from optimizer_tool.smoke.session import SmokeReport

JSON_VERSION = 1
STYLE = {PASS: "bold green", FAIL: "bold red", NA: "dim", WARN: "bold yellow"}


def _status(status: str) -> Text:
    return Text(status.upper() if status != NA else "n/a", style=STYLE.get(status, ""))


def render_table(reports: List[SmokeReport], console: Console) -> None:
    """One report: check | status | measured. With --compare: baseline and patched side by side."""
    main = reports[-1]
    compare = len(reports) > 1
    title = f"t2s-opt smoke-test: {main.target}"
    table = Table(title=Text(title), show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    if compare:
        for report in reports:
            table.add_column(report.label or "run", no_wrap=True)
            table.add_column(f"measured ({report.label})", overflow="fold")
    else:
        table.add_column("status", no_wrap=True)
        table.add_column("measured", overflow="fold")
    rows_by_key = [{r.key: r for r in report.rows} for report in reports]
    for row in main.rows:
        cells: List[Any] = [row.title]
        for by_key in rows_by_key:
            r = by_key.get(row.key)
            if r is None:
                cells += [Text("-"), Text("")]
                continue
            measured = Text(r.value)
            if r.detail:
                measured.append("\n" + r.detail, style="dim")
            cells += [_status(r.status), measured]
        table.add_row(*cells)
    console.print(table)
    for report in reports:
        prefix = f"{report.label}: " if compare else ""
        if report.stopped:
            console.print(Text(f"{prefix}stopped ({report.stopped}): partial report", style="bold yellow"))
        failed = report.failed
        verdict = "PASS" if report.passed else f"FAIL ({', '.join(r.key for r in failed)})" if failed else "INCOMPLETE"
        console.print(Text(f"{prefix}{verdict}", style="bold green" if report.passed else "bold red"))


def _clean(value: Any) -> Any:
    """Strict JSON: non-finite floats become the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def report_dict(report: SmokeReport) -> Dict[str, Any]:
    return {
        "target": report.target,
        "mode": report.mode,
        "label": report.label or None,
        "out_dir": report.out_dir,
        "passed": report.passed,
        "complete": report.stopped is None,
        "stopped": report.stopped,
        "failed": [r.key for r in report.failed],
        "overrides": [asdict(o) for o in report.overrides],
        "notes": report.notes,
        "checks": [r.to_dict() for r in report.rows],
        "runs": [{**asdict(r), "ok": r.ok} for r in report.runs],
        "series": report.series,
    }


def to_json(reports: List[SmokeReport], exit_code: int, png: Optional[Path]) -> Dict[str, Any]:
    """The patched (or only) trainer at top level; with --compare the baseline under "baseline"."""
    data = {
        "tool": "t2s-opt smoke-test",
        "version": JSON_VERSION,
        "exit_code": exit_code,
        **report_dict(reports[-1]),
        "plot": str(png) if png else None,
        "baseline": report_dict(reports[0]) if len(reports) > 1 else None,
    }
    return _clean(data)


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Atomic, so CI never reads half a report (also when written after Ctrl-C)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def plot(reports: List[SmokeReport], path: Path) -> Optional[Path]:
    """Loss, lr and gradient norm per optimizer step; with --compare both trainers on the same axes."""
    if not any(r.series.get("train") for r in reports):
        return None  # before the import: matplotlib costs a second, after a --timeout too
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    # One colour per trainer; baseline dashed, so identical curves stay visible under the patched ones.
    styles = [("--", "C0"), ("-", "C1")] if len(reports) > 1 else [("-", "C0")]
    for report, (style, color) in zip(reports, styles):
        _plot_report(axes, report, style, color)
    _label_axes(axes, reports)
    fig.suptitle(f"t2s-opt smoke-test: {Path(reports[-1].target).name}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_report(axes: Any, report: SmokeReport, style: str, color: str) -> None:
    """One trainer's curves: loss (resumed steps as crosses, the compared medians as bars), lr, grad norm."""
    ax_loss, ax_lr, ax_grad = axes
    name = report.label or "train"
    train = report.series.get("train", [])
    steps = [r["step"] for r in train]
    ax_loss.plot(steps, [_num(r["loss"]) for r in train], style, color=color, label=f"{name} loss")
    resume = report.series.get("resume", [])
    if resume:
        ax_loss.plot(
            [r["step"] for r in resume],
            [_num(r["loss"]) for r in resume],
            "x",
            color=color,
            markersize=5,
            label=f"{name} resumed from a checkpoint",
        )
    ax_lr.plot(steps, [_num(r["lr"]) for r in train], style, color=color, label=f"{name} lr")
    ax_grad.plot(
        steps,
        [_num(r["grad_norm"]) for r in train],
        style,
        color=color,
        label=f"{name} grad norm at optimizer.step",
    )
    if any(r["clip_pre"] is not None for r in train):
        ax_grad.plot(steps, [_num(r["clip_pre"]) for r in train], ":", color=color, label=f"{name} before clipping")
        max_norm = next(r["max_norm"] for r in train if r["max_norm"] is not None)
        ax_grad.axhline(max_norm, color="grey", linewidth=0.8)
    loss_row = next((r for r in report.rows if r.key == "loss_falls" and r.data.get("median_first") is not None), None)
    if loss_row is not None and steps:
        w = loss_row.data["window"]
        ax_loss.hlines([loss_row.data["median_first"]], steps[0], steps[min(w, len(steps)) - 1], colors="k")
        ax_loss.hlines([loss_row.data["median_last"]], steps[-w], steps[-1], colors="k")


def _label_axes(axes: Any, reports: List[SmokeReport]) -> None:
    """Labels, scales (lr on a log scale when it spans more than three decades), grids and legends."""
    ax_loss, ax_lr, ax_grad = axes
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    lrs = [
        r["lr"]
        for report in reports
        for r in report.series.get("train", [])
        if isinstance(r["lr"], (int, float)) and math.isfinite(r["lr"]) and r["lr"] > 0
    ]
    if lrs and max(lrs) / min(lrs) > 1e3:  # a runaway warm-up spans many decades
        ax_lr.set_yscale("log")
    ax_grad.set_ylabel("gradient norm")
    ax_grad.set_yscale("log")
    ax_grad.set_xlabel("optimizer step")
    for ax in (ax_loss, ax_lr, ax_grad):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


def _num(value: Any) -> float:
    # matplotlib leaves gaps for NaN, so non-finite steps show as breaks in the curve
    return value if isinstance(value, (int, float)) and math.isfinite(value) else float("nan")
