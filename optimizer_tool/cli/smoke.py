"""``t2s-opt smoke-test``: options, progress display, exit status.

Exit status: 0 every applicable check passed; 1 a check failed or the run hit --timeout;
2 usage error; 130 interrupted (Ctrl-C / SIGTERM). The JSON and the PNG are written in every
case where a run started, the partial ones included.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import psutil
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from optimizer_tool.cli.common import fail
from optimizer_tool.errors import UsageError
from optimizer_tool.smoke import report as reporting
from optimizer_tool.smoke.runner import Interrupted, RunSpec
from optimizer_tool.smoke.session import Session, SmokeOptions, SmokeReport, partial_rows, validate

MARKER = ".t2s-smoke"
EXIT_INTERRUPTED = 130
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """'8GiB', '500MB', '1.5G', '123456' (bytes)."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else None
    if not match or unit not in _UNITS:
        raise UsageError(f"--max-memory {text!r}: expected a size such as 8GiB, 500MB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[unit])


def prepare_out(out: Optional[Path]) -> Path:
    """A fresh folder; an existing one is reused only if an earlier smoke test made it (marker file)."""
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="t2s-smoke-"))
    elif out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out}: exists and is not a folder")
        if any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise UsageError(f"--out {out}: folder is not empty and was not made by t2s-opt smoke-test")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by t2s-opt smoke-test; rerunning with this --out replaces it\n")
    return out.resolve()


class _Display:
    """Rich progress on stderr: one bar per run (train, resume, sample), with the latest loss and lr."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks = {}
        self.prefix = ""

    def start(self, spec: RunSpec) -> None:
        self.tasks[id(spec)] = self.progress.add_task(
            f"{self.prefix}{spec.name}", total=spec.expected_steps, info="starting"
        )

    def events(self, spec: RunSpec, events: List[dict]) -> None:
        task = self.tasks.get(id(spec))
        if task is None:
            return
        steps = [e for e in events if e.get("ev") == "step" and e.get("opt", 0) == 0]
        info = None
        if steps:
            last = steps[-1]
            loss = last.get("loss")
            lr = (last.get("lr") or [None])[0]
            info = f"loss {loss:.4g} lr {lr:.2e}" if loss is not None and lr is not None else "training"
            self.progress.update(task, completed=last["n"], info=info)
        elif any(e.get("ev") == "torch" for e in events):
            self.progress.update(task, info="torch loaded")
        elif any(e.get("ev") == "save" for e in events):
            self.progress.update(task, info="saved")


# The options of smoke-test, declared once here so the signature below reads as a list.
_PATH = typer.Argument(
    Path("."),
    help="The reference trainer (a folder with the reference_trainer "
    "package), or with --cmd the folder the command runs in.",
)
_CMD = typer.Option(
    None,
    "--cmd",
    help='Any trainer: the command to run, e.g. "python '
    'train.py --epochs {epochs} --out {out}" ({out}: a folder of ours).',
)
_EPOCHS = typer.Option(2, "--epochs", min=1, help="Epochs to train (reference trainer; {epochs} in --cmd).")
_OUT = typer.Option(
    None, "--out", help="Folder for runs, logs, probe records and the plot (default: a new temporary folder)."
)
_JSON = typer.Option(None, "--json", help="Write the report as JSON (for CI).")
_PNG = typer.Option(None, "--png", help="Loss/lr/grad-norm plot (default: OUT/smoke.png).")
_TIMEOUT = typer.Option(
    900.0,
    "--timeout",
    help="Seconds for the whole smoke test, counted from the command's start (> 0); with --compare, for each "
    "side (baseline, then patched, from its own start); then every process the runs started is stopped "
    "(SIGTERM, 5 s of grace, SIGKILL) and the partial report written.",
)
_MAX_MEMORY = typer.Option(
    None, "--max-memory", help="Fail above this peak memory (CUDA max allocated on GPU, RSS on CPU), e.g. 8GiB."
)
_DEVICE = typer.Option(None, "--device", help="Reference trainer: cpu, cuda, cuda:1 ...")
_RESUME_ARG = typer.Option(
    None,
    "--resume-arg",
    help='--cmd trainers: how to resume, e.g. "--resume {ckpt}" (a checkpoint file) or "--resume_from_checkpoint '
    '{ckpt_dir}" (a checkpoint folder, accelerate save_state); needs {out} in --cmd.',
)
_SAMPLE_CMD = typer.Option(
    None,
    "--sample-cmd",
    help="--cmd trainers: a command that samples from {ckpt} and torch.saves the result under {out}.",
)
_WARMUP_STEPS = typer.Option(
    None, "--warmup-steps", help="--cmd trainers: configured warm-up steps (the lr must peak there)."
)
_MAX_GRAD_NORM = typer.Option(None, "--max-grad-norm", help="--cmd trainers: configured clipping norm (0 = off).")
_MIN_LOSS_DROP = typer.Option(
    0.05, "--min-loss-drop", help="Required fall of the median loss, last quarter vs first quarter."
)
_RESUME_RTOL = typer.Option(1e-3, "--resume-rtol", help="Tolerance of the first resumed step's loss.")
_EXACT_RESUME = typer.Option(
    False,
    "--exact-resume",
    help="Fail when the first resumed step's loss differs (RNG and data order restored too); "
    "without it that is reported as a warning.",
)
_MAX_STEPS = typer.Option(
    None,
    "--max-steps",
    min=1,
    help="Stop each training run cleanly after N optimizer steps (SystemExit(0) out of optimizer.step(): "
    "the trainer's finally blocks run); not a failure of exit.",
)
_COMPARE = typer.Option(
    None, "--compare", help="Baseline trainer to run the same way, shown side by side (exit status judges PATH)."
)
_PROMPT = typer.Option(None, "--prompt", help="Reference trainer: sampling prompt(s).")


def smoke_test(
    path: Path = _PATH,
    cmd: Optional[str] = _CMD,
    epochs: int = _EPOCHS,
    out: Optional[Path] = _OUT,
    json_path: Optional[Path] = _JSON,
    png: Optional[Path] = _PNG,
    timeout: Optional[float] = _TIMEOUT,
    max_memory: Optional[str] = _MAX_MEMORY,
    device: Optional[str] = _DEVICE,
    resume_arg: Optional[str] = _RESUME_ARG,
    sample_cmd: Optional[str] = _SAMPLE_CMD,
    warmup_steps: Optional[int] = _WARMUP_STEPS,
    max_grad_norm: Optional[float] = _MAX_GRAD_NORM,
    min_loss_drop: float = _MIN_LOSS_DROP,
    resume_rtol: float = _RESUME_RTOL,
    exact_resume: bool = _EXACT_RESUME,
    max_steps: Optional[int] = _MAX_STEPS,
    compare: Optional[Path] = _COMPARE,
    prompt: Optional[List[str]] = _PROMPT,
) -> None:
    """Run a short training under a probe and check measured signals: finite loss and gradients, falling
    loss, lr schedule, clipping, EMA in the checkpoint, resume, a sample, time and memory."""
    err, out_console = _consoles()
    try:
        options = SmokeOptions(
            path=path,
            cmd=cmd,
            epochs=epochs,
            timeout=timeout,
            device=device,
            max_memory=parse_size(max_memory) if max_memory else None,
            resume_arg=resume_arg,
            sample_cmd=sample_cmd,
            warmup_steps=warmup_steps,
            max_grad_norm=max_grad_norm,
            min_loss_drop=min_loss_drop,
            resume_rtol=resume_rtol,
            exact_resume=exact_resume,
            max_steps=max_steps,
            prompts=tuple(prompt or ("HELLO",)),
        )
        validate(options)
        if compare is not None:
            validate(SmokeOptions(**{**options.__dict__, "path": compare}))
        out_dir = prepare_out(out)
    except UsageError as exc:
        raise fail(str(exc))

    def say(text: str) -> None:
        # markup off: paths and [sections] are text; soft wrap: paths stay greppable in CI logs
        err.print(text, markup=False, highlight=False, soft_wrap=True)

    say(f"smoke-test output folder: {out_dir}")
    targets = [(compare, "baseline"), (path, "patched")] if compare is not None else [(path, "")]
    try:
        reports, interrupted = _run_targets(targets, options, out_dir, say, _Display(err))
    except UsageError as exc:
        raise fail(str(exc))

    exit_code = EXIT_INTERRUPTED if interrupted else _verdict(reports, len(targets))
    _write_outputs(reports, exit_code, png or out_dir / "smoke.png", json_path, say, out_console)
    raise typer.Exit(exit_code)


def _deadline(timeout: Optional[float], first: bool) -> Optional[float]:
    """``--timeout`` as a ``time.monotonic()`` value for one target (each side of --compare has its own):
    the first counted from the start of this process (start-up and imports included), a later one from now."""
    if timeout is None:
        return None
    started_ago = 0.0
    if first:
        try:
            started_ago = max(0.0, time.time() - psutil.Process().create_time())
        except psutil.Error:
            pass
    return time.monotonic() + timeout - started_ago


def _consoles() -> Tuple[Console, Console]:
    """stderr for notes and progress; stdout for the table and the paths of what was written."""
    err = Console(stderr=True)
    out_console = Console()
    if not out_console.is_terminal:
        out_console = Console(width=140)  # CI logs: rich would assume 80 columns and fold every value
    return err, out_console


def _verdict(reports: List[SmokeReport], targets: int) -> int:
    """0 when every target ran to the end (none hit its --timeout) and the last one (the one judged) passed."""
    complete = len(reports) == targets and all(r.stopped is None for r in reports)
    return 0 if complete and reports[-1].passed else 1


def _run_targets(
    targets: List[Tuple[Path, str]],
    options: SmokeOptions,
    out_dir: Path,
    say: Callable[[str], None],
    display: _Display,
) -> Tuple[List[SmokeReport], bool]:
    """Each target in turn, baseline first, each within its own --timeout; stops after an interruption.

    Returns the reports, and whether the user interrupted (their partial report is the last one)."""
    reports: List[SmokeReport] = []
    with display.progress:
        for i, (target, label) in enumerate(targets):
            display.prefix = f"{label} " if label else ""
            session = Session(
                SmokeOptions(**{**options.__dict__, "path": target}),
                out_dir / label if label else out_dir,
                _deadline(options.timeout, first=i == 0),
                say,
                on_events=display.events,
                on_start=display.start,
                label=label,
            )
            try:
                current = session.run()
            except (Interrupted, KeyboardInterrupt):
                current = session.partial
                current.stopped = "interrupted"
                current.rows = partial_rows(current, session.o)
                reports.append(current)
                return reports, True
            reports.append(current)
    return reports, False


def _write_outputs(
    reports: List[SmokeReport],
    exit_code: int,
    png_path: Path,
    json_path: Optional[Path],
    say: Callable[[str], None],
    out_console: Console,
) -> None:
    """The plot, the table on stdout, and the JSON for CI."""
    try:
        png_written = reporting.plot(reports, png_path)
    except Exception as exc:  # a plot must never hide the verdict
        say(f"plot not written: {type(exc).__name__}: {exc}")
        png_written = None
    reporting.render_table(reports, out_console)
    if png_written:
        out_console.print(f"plot: {png_written}", markup=False, highlight=False)
    if json_path is not None:
        reporting.write_json(json_path, reporting.to_json(reports, exit_code, png_written))
        out_console.print(f"json: {json_path}", markup=False, highlight=False)
