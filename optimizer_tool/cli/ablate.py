"""``t2s-opt ablate``: train the trainer with each optimization alone, all together and none, and report
what each one changes in the evaluation metrics, beside what the plan claims.

Exit status: 0 every applied arm trained and was evaluated for every seed (arms that could not be
applied are reported, not failures); 1 a job failed (its log is named); 2 usage error; 130
interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from optimizer_tool.ablate import report
from optimizer_tool.ablate.runner import JobFailed, Runner, Settings, claim_out
from optimizer_tool.cli.common import check_keys, fail, split
from optimizer_tool.errors import UsageError
from optimizer_tool.smoke.session import PACKAGE, PACKAGE_FILES, reference_root

EXIT_INTERRUPTED = 130


class _ProgressReporter:
    """One bar over every apply and job, the current one named; a line per finished step."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("planning", total=0)

    def add_total(self, count: int) -> None:
        total = self.progress.tasks[0].total or 0
        self.progress.update(self.task, total=total + count)

    def begin(self, label: str) -> None:
        self.progress.update(self.task, description=label)

    def end(self, label: str, outcome: str) -> None:
        self.progress.console.print(f"{label}: {outcome}", markup=False, highlight=False)
        self.progress.advance(self.task)


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def _package(path: Path) -> Path:
    root = reference_root(path)
    if root is None:
        raise UsageError(
            f"{path}: no {PACKAGE} package here ({', '.join(PACKAGE_FILES)}); pass the {PACKAGE} folder or the "
            "folder that holds it"
        )
    return root / PACKAGE


def _check_options(keys: List[str], recogniser: Optional[Path]) -> tuple[str, ...]:
    """The keys, deduplicated in their order; a missing recogniser file is refused before anything runs."""
    chosen = tuple(dict.fromkeys(check_keys(split(keys), "--keys")))
    if not chosen:
        raise UsageError("--keys: name at least one optimization, e.g. --keys ema,cosine (`t2s-opt rules` lists them)")
    if recogniser is not None and not recogniser.is_file():
        raise UsageError(f"--recogniser {recogniser}: no such file; `python -m t2s.eval train-recogniser` makes one")
    return chosen


_PATH = typer.Argument(Path("."), help=f"The trainer: a {PACKAGE} folder, or the folder holding it.")
_KEYS = typer.Option(..., "--keys", help="Optimizations to ablate, comma-separated (ema,cosine,vpred,...).")
_SEEDS = typer.Option(3, "--seeds", min=1, help="Seeds per arm: 0..N-1 (train.seed).")
_BUDGET = typer.Option(
    ...,
    "--budget-steps",
    min=1,
    help="Optimizer steps per run; the trainer counts epochs, so this is rounded up "
    "to whole epochs (the report gives the steps run).",
)
_OUT = typer.Option(..., "--out", help="Folder for arms, runs and the report; rerun with it to resume.")
_DEVICE = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: the trainer's: cuda when available).")
_SIZE = typer.Option(None, "--size", min=8, help="Frame size in pixels (data.image_size; default: the preset's).")
_FRAMES = typer.Option(None, "--frames", min=1, help="Frames per clip (data.num_frames; default: the preset's).")
_PER_GLOSS = typer.Option(2, "--num-per-gloss", min=1, help="Clips sampled per gloss (26 glosses) for evaluation.")
_RESAMPLES = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples of each run's own metric intervals.")
_RECOGNISER = typer.Option(
    None,
    "--recogniser",
    help="Gloss recogniser checkpoint (default: t2s.eval's cached one for the clip size, trained on first use).",
)
_PRESET = typer.Option("smoke", "--preset", help="The trainer's preset every run starts from; 'none' for its defaults.")
_SET = typer.Option(None, "--set", help="Config override for every run, e.g. --set train.learning_rate=1e-3.")
_JSON = typer.Option(None, "--json", help="Report as JSON (default: OUT/report.json).")
_PNG = typer.Option(None, "--png", help="Bar chart (default: OUT/ablation.png).")


def ablate_command(
    path: Path = _PATH,
    keys: List[str] = _KEYS,
    seeds: int = _SEEDS,
    budget_steps: int = _BUDGET,
    out: Path = _OUT,
    device: Optional[str] = _DEVICE,
    size: Optional[int] = _SIZE,
    frames: Optional[int] = _FRAMES,
    num_per_gloss: int = _PER_GLOSS,
    resamples: int = _RESAMPLES,
    recogniser: Optional[Path] = _RECOGNISER,
    preset: str = _PRESET,
    overrides: Optional[List[str]] = _SET,
    json_path: Optional[Path] = _JSON,
    png: Optional[Path] = _PNG,
) -> None:
    """Measure what each optimization buys: baseline, each key alone, all together; seeds; effect +- CI."""
    try:
        settings = Settings(
            package=_package(path), keys=_check_options(keys, recogniser), seeds=seeds, budget_steps=budget_steps,
            out=out.resolve(), device=device, size=size, frames=frames, num_per_gloss=num_per_gloss,
            resamples=resamples, recogniser=recogniser, preset=None if preset == "none" else preset,
            overrides=tuple(overrides or ()),
        )  # fmt: skip
        claim_out(settings)
    except UsageError as exc:
        raise fail(str(exc))
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )
    signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl-C: the running job is killed with us, a rerun resumes
    try:
        with progress:
            outcome = Runner(settings, _ProgressReporter(progress)).run()
    except UsageError as exc:
        raise fail(str(exc))
    except JobFailed as exc:  # the shared preparation: nothing can run without it
        typer.echo(f"t2s-opt: preparing the ablation failed: {exc}", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err.print(f"interrupted; rerun the same command to resume from {settings.out}", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    summary = report.summarise(outcome)
    out_console = Console()
    if not out_console.is_terminal:  # a file or pipe: wide enough that the table's rows stay one line each
        out_console = Console(width=140)
    out_console.print(report.table(summary))
    for arm in summary.arms:
        if not arm.copy.applied:
            typer.echo(f"{arm.copy.arm.label} not applied ({arm.copy.command}):\n  {arm.copy.reason}", err=True)
        for seed, why in arm.failures.items():
            typer.echo(f"{arm.copy.arm.label} seed {seed} failed: {why}", err=True)
    typer.echo(f"report: {report.write_json(summary, json_path or settings.out / 'report.json')}")
    typer.echo(report.bar_chart(summary, png or settings.out / "ablation.png"))
    raise typer.Exit(0 if outcome.complete else 1)
