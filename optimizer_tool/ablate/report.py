"""The ablation's report: effects per arm beside the plan's claims, as a rich table, JSON and a bar chart.

The headline is the Fréchet distance on recogniser features (``t2s.eval``; not I3D-FVD), the
metric closest to the FVD the plan's percentages speak of; back-translation accuracy and the
hand-trajectory error are shown beside it. Effects and intervals come from
``optimizer_tool.ablate.statistics`` (paired by seed, 95 % Student-t over seeds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rich.table import Table

from optimizer_tool.ablate.arms import BASELINE, ArmCopy
from optimizer_tool.ablate.claims import Claim, claim_for
from optimizer_tool.ablate.runner import Outcome
from optimizer_tool.ablate.statistics import Effect, Interval, against_claim, effect, mean_interval

HEADLINE = "frechet_distance"


@dataclass(frozen=True)
class Column:
    """A metric shown in the table and the chart, as a difference in its own units or an improvement in %."""

    metric: str
    title: str
    percent: bool
    scale: float = 1.0  # difference shown in these units (100: accuracy in percentage points)


COLUMNS = (
    Column(HEADLINE, "Fréchet\nimpr. %", percent=True),
    Column("back_translation", "back-transl.\nΔ points", percent=False, scale=100.0),
    Column("trajectory_error_norm", "hand-traj.\nimpr. %", percent=True),
)

METHOD = (
    "effect = arm - baseline per seed (same data, step budget and seed); mean +- 95% Student-t half-width "
    "over the seeds; improvement in % of the baseline, positive = better"
)


@dataclass(frozen=True)
class ArmReport:
    copy: ArmCopy
    seeds: tuple[int, ...]  # finished
    failures: dict[int, str]
    effects: dict[str, Effect]  # metric -> effect over the baseline (none for the baseline itself)
    claim: Optional[Claim]

    @property
    def status(self) -> str:
        if not self.copy.applied:
            return "not applied"
        return f"{len(self.seeds)}" + (f", {len(self.failures)} failed" if self.failures else "")

    @property
    def headline(self) -> Optional[Effect]:
        return self.effects.get(HEADLINE)

    @property
    def vs_claim(self) -> str:
        return against_claim(self.headline.improvement if self.headline else None, self.claim)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.copy.arm.label,
            "keys": list(self.copy.arm.keys),
            "applied": self.copy.applied,
            "reason": self.copy.reason or None,
            "apply_command": self.copy.command,
            "trainer": str(self.copy.root),
            "seeds": list(self.seeds),
            "failures": {str(seed): why for seed, why in self.failures.items()},
            "claim": None if self.claim is None else self.claim.to_dict(),
            "effects": {name: e.to_dict() for name, e in self.effects.items()},
            "headline_vs_claim": self.vs_claim if self.copy.arm.keys else None,
        }


@dataclass(frozen=True)
class Summary:
    outcome: Outcome
    baseline: dict[str, Interval]  # metric -> the baseline's mean over seeds
    arms: list[ArmReport]

    def to_dict(self) -> dict[str, Any]:
        s = self.outcome.settings
        return {
            "settings": {**s.fingerprint(), "keys": list(s.keys), "seeds": s.seeds, "out": str(s.out)},
            "prepared": self.outcome.prepared,
            "statistics": METHOD,
            "headline_metric": HEADLINE,
            "baseline": {name: interval.to_dict() for name, interval in self.baseline.items()},
            "arms": [arm.to_dict() for arm in self.arms],
        }


def _values(results: dict[int, dict[str, Any]], metric: str) -> dict[int, float]:
    return {seed: float(r["metrics"][metric]["mean"]) for seed, r in results.items() if metric in r["metrics"]}


def _directions(outcome: Outcome) -> dict[str, str]:
    """Metric name -> which way is better, as the evaluator reported it."""
    return {
        name: metric["better"]
        for results in outcome.results.values()
        for result in results.values()
        for name, metric in result["metrics"].items()
    }


def summarise(outcome: Outcome) -> Summary:
    base = outcome.results.get(BASELINE, {})
    directions = _directions(outcome)
    baseline = {name: mean_interval(list(_values(base, name).values())) for name in directions if _values(base, name)}
    arms = []
    for copy in outcome.copies:
        results = outcome.results.get(copy.arm.name, {})
        effects = {}
        if copy.arm.keys:
            for name, better in directions.items():
                found = effect(name, better, _values(base, name), _values(results, name))
                if found is not None:
                    effects[name] = found
        failures = outcome.failures.get(copy.arm.name, {})
        arms.append(ArmReport(copy, tuple(sorted(results)), failures, effects, claim_for(copy.arm.keys)))
    return Summary(outcome, baseline, arms)


# ---------------------------------------------------------------------------- table


def _signed(value: float, half: Optional[float], unit: str) -> str:
    return f"{value:+.1f} ± {half:.1f}{unit}" if half is not None else f"{value:+.1f}{unit}"


def format_effect(found: Optional[Effect], column: Column) -> str:
    if found is None:
        return "—"
    if column.percent:
        if found.improvement is None:
            return "n/a (baseline 0)"
        return _signed(found.improvement.mean, found.improvement.half_width, "%")
    half = found.difference.half_width
    return _signed(found.difference.mean * column.scale, None if half is None else half * column.scale, "")


def _baseline_cell(interval: Optional[Interval]) -> str:
    if interval is None:
        return "—"
    return f"{interval.mean:.4g}" + (f" ± {interval.half_width:.2g}" if interval.half_width is not None else "")


def table(summary: Summary) -> Table:
    s = summary.outcome.settings
    title = f"t2s-opt ablate: {summary.outcome.prepared.get('steps')} steps, seeds 0..{s.seeds - 1}"
    grid = Table(title=title, caption=METHOD)
    grid.add_column("arm")
    grid.add_column("seeds")
    for column in COLUMNS:
        grid.add_column(column.title, justify="right")
    grid.add_column("plan\nclaims", justify="right")
    grid.add_column("verdict\n(Fréchet)")
    grid.add_column("vs claim")
    for arm in summary.arms:
        if not arm.copy.arm.keys:
            cells = [f"[dim]{_baseline_cell(summary.baseline.get(c.metric))}[/dim]" for c in COLUMNS]
            grid.add_row("baseline", arm.status, *cells, "", "(absolute)", "")
            continue
        cells = [format_effect(arm.effects.get(c.metric), c) for c in COLUMNS]
        verdict = arm.headline.verdict if arm.headline else "—"
        claim = arm.claim.label() if arm.claim else "—"
        grid.add_row(arm.copy.arm.label, arm.status, *cells, claim, verdict, arm.vs_claim if arm.headline else "—")
    return grid


# ---------------------------------------------------------------------------- files


def write_json(summary: Summary, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _bar(found: Optional[Effect], column: Column) -> tuple[float, float]:
    """Height and error-bar half-width of one bar (0 where there is nothing to show)."""
    if found is None:
        return 0.0, 0.0
    interval = found.improvement if column.percent else found.difference
    if interval is None:
        return 0.0, 0.0
    scale = 1.0 if column.percent else column.scale
    return interval.mean * scale, (interval.half_width or 0.0) * scale


def bar_chart(summary: Summary, path: Path) -> str:
    """A PNG with one panel per column: a bar per measured arm with its 95 % interval, and the plan's
    claimed range beside the headline bars. Returns what was done, for the user."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no bar chart: matplotlib is not installed (pip install matplotlib); the table and JSON hold the numbers"
    arms = [a for a in summary.arms if a.copy.arm.keys and a.effects]
    if not arms:
        return "no bar chart: no arm has results to compare with the baseline"
    figure, axes = plt.subplots(1, len(COLUMNS), figsize=(5 * len(COLUMNS), 4), squeeze=False)
    labels = [a.copy.arm.label.replace(" (", "\n(") for a in arms]
    for axis, column in zip(axes[0], COLUMNS):
        heights, errors = zip(*(_bar(a.effects.get(column.metric), column) for a in arms))
        positions = range(len(arms))
        bars = [x - 0.1 for x in positions]
        axis.bar(bars, heights, width=0.5, yerr=errors, capsize=4, color="tab:blue", label="measured (95% CI)")
        if column.metric == HEADLINE:
            for x, arm in zip(positions, arms):
                if arm.claim is not None:
                    axis.fill_between([x + 0.2, x + 0.35], arm.claim.low, arm.claim.high, color="tab:orange")
            axis.plot([], [], color="tab:orange", linewidth=6, label="plan's claim")
            axis.legend(fontsize=8)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(list(positions), labels, fontsize=8)
        axis.set_title(column.title.replace("\n", " "), fontsize=10)
    s = summary.outcome.settings
    figure.suptitle(
        f"ablation: {summary.outcome.prepared.get('steps')} steps, {s.seeds} seed(s), "
        f"clips {'x'.join(map(str, summary.outcome.prepared.get('clip_shape', [])))}; positive = better",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"bar chart: {path}"
