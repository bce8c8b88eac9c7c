"""What a smoke test runs, in which order, and which checks judge it.

Reference trainer (a folder with the ``reference_trainer`` package): ``train --preset smoke`` with
``--epochs N`` and an output folder of ours, then, side by side, ``train --resume`` from the
epoch N-1 checkpoint and ``generate`` from the last one. Any other trainer: the user's ``--cmd``,
optionally ``--resume-arg`` and ``--sample-cmd``. Every process runs under the probe.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from optimizer_tool.errors import UsageError
from optimizer_tool.smoke import checks, media
from optimizer_tool.smoke.checkpoint import Unpickler
from optimizer_tool.smoke.checks import Expectations, Row
from optimizer_tool.smoke.records import ProbeRecord, existing_checkpoint, load_probe
from optimizer_tool.smoke.reference_sample import EMA_VERDICT_FILE, SAMPLE_FILE
from optimizer_tool.smoke.runner import (
    Interrupted,
    RunResult,
    RunSpec,
    python,
    run_all,
    run_helper,
    write_sitecustomize,
)

PACKAGE = "reference_trainer"
PACKAGE_FILES = ("__init__.py", "main.py", "trainer.py", "config.py")

# Printed per category before the run (Lightning's fast_dev_run hides what it changes; we do not).
OVERRIDE_CATEGORIES = (
    ("size", ("model.", "data.image_size", "data.num_frames", "train.num_inference_steps")),
    ("data", ("data.",)),
    ("epochs", ("train.num_epochs",)),
    ("logging", ("train.log_every", "train.save_every_epochs")),
    ("output", ("train.output_dir",)),
    ("training", ("train.",)),
)

CONFIG_QUERY = """\
import json, reference_trainer, reference_trainer.config as c
if "smoke" not in getattr(c, "PRESETS", {}):
    raise SystemExit(f"{c.__file__}: no 'smoke' preset in PRESETS")
print(json.dumps({"origin": reference_trainer.__file__, "default": c.Config().to_dict(),
                  "smoke": c.PRESETS["smoke"]().to_dict()}))
"""


@dataclass
class SmokeOptions:
    path: Path
    cmd: Optional[str] = None
    epochs: int = 2
    timeout: Optional[float] = 900.0
    device: Optional[str] = None
    max_memory: Optional[int] = None
    resume_arg: Optional[str] = None
    sample_cmd: Optional[str] = None
    warmup_steps: Optional[int] = None
    max_grad_norm: Optional[float] = None
    min_loss_drop: float = 0.05
    resume_rtol: float = 1e-3
    exact_resume: bool = False
    max_steps: Optional[int] = None
    prompts: Sequence[str] = ("HELLO",)


@dataclass
class Override:
    category: str
    key: str
    before: Any
    after: Any
    source: str  # "smoke preset" or "t2s-opt"


@dataclass
class SmokeReport:
    target: str
    mode: str  # "reference" | "cmd"
    out_dir: str
    label: str = ""
    overrides: List[Override] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    runs: List[RunResult] = field(default_factory=list)
    rows: List[Row] = field(default_factory=list)
    series: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    stopped: Optional[str] = None  # "timeout" | "interrupted"

    @property
    def passed(self) -> bool:
        return self.stopped is None and bool(self.rows) and all(r.status != checks.FAIL for r in self.rows)

    @property
    def failed(self) -> List[Row]:
        return [r for r in self.rows if r.status == checks.FAIL]


EventSink = Callable[[RunSpec, List[dict]], None]


class PresetUnreadable(Exception):
    def __init__(self, message: str, detail: str, timed_out: bool = False):
        super().__init__(message)
        self.detail = detail
        self.timed_out = timed_out


class _SessionBase:
    """What every kind of target shares: the runs under the probe, the deadline, the first checks."""

    def __init__(
        self,
        options: SmokeOptions,
        out_dir: Path,
        deadline: Optional[float],
        say: Callable[[str], None],
        on_events: Optional[EventSink] = None,
        on_start: Optional[Callable[[RunSpec], None]] = None,
        label: str = "",
    ):
        self.o = options
        self.out = out_dir
        self.deadline = deadline
        self.say = say
        self.on_events = on_events
        self.on_start = on_start or (lambda spec: None)
        self.label = label
        self.site_dir = write_sitecustomize(out_dir / ".probe_site")
        self.train_spec: Optional[RunSpec] = None
        # The report being built; after Ctrl-C the CLI turns what it holds into the partial report.
        self.partial = SmokeReport(
            target=str(options.path), mode="cmd" if options.cmd else "reference", out_dir=str(out_dir), label=label
        )

    def _runs(self, specs: List[RunSpec], report: SmokeReport) -> List[RunResult]:
        for spec in specs:
            self.on_start(spec)
        try:
            results = run_all(specs, self.site_dir, self.deadline, self.on_events)
        except Interrupted as exc:
            report.runs += exc.results
            report.stopped = "interrupted"
            raise
        report.runs += results
        if any(r.timed_out for r in results):
            report.stopped = "timeout"
        return results

    def _limit(self, done: int = 0) -> Dict[str, str]:
        """The probe's --max-steps for a run that starts after ``done`` steps (a resumed run: the rest)."""
        if not self.o.max_steps:
            return {}
        return {"T2S_SMOKE_MAX_STEPS": str(max(1, self.o.max_steps - done))}

    def _time_left(self) -> bool:
        return self.deadline is None or time.monotonic() < self.deadline

    def _train(self, spec: RunSpec, report: SmokeReport) -> ProbeRecord:
        self.train_spec = spec
        try:
            self._runs([spec], report)
        finally:
            # Even a stopped run leaves a readable probe file: the partial report is built from it.
            record = load_probe(spec.probe_path)
            report.series["train"] = series(record)
        return record

    def _common_rows(self, run: RunResult, record: ProbeRecord, expect: Expectations) -> List[Row]:
        why = checks.unreached(run, record)
        if why:
            return [checks.check_exit(run, record)] + checks.not_judged(checks.STEP_CHECKS, why)
        if run.timed_out or not self._time_left():
            # Reading a checkpoint (torch, maybe a separate process) would run past the deadline.
            ema = checks.not_judged(["ema_checkpoint"], "not judged: --timeout reached")[0]
            self.partial.stopped = self.partial.stopped or "timeout"
        else:
            # A checkpoint that needs full unpickling: in a process started like the training run, not here.
            spec = self.train_spec
            unpickler = Unpickler(spec.cwd, dict(spec.env), self.deadline) if spec is not None else None
            ema = checks.check_ema_checkpoint(record, expect, unpickler)
        return [
            checks.check_exit(run, record),
            checks.check_finite(record),
            checks.check_loss_falls(record, expect.min_loss_drop),
            checks.check_lr_schedule(record, expect),
            checks.check_grad_clipping(record, expect),
            ema,
        ]

    def _blocked(self, train: RunResult) -> str:
        """Why nothing runs after the training run ('' when the resume and sample runs may start)."""
        if train.timed_out or (train.ok and not self._time_left()):
            return "not run: --timeout reached"
        if train.interrupted:
            return "not run: interrupted"
        return "" if train.ok else "not run: the training run failed"


@dataclass
class _ReferenceLaunch:
    """How the reference trainer's processes start: in ``root``, importing the copy found there."""

    root: Path
    out: Path  # the session's output folder
    epochs: int
    device: List[str]  # ["--device", DEVICE] or nothing

    @property
    def env(self) -> Dict[str, str]:
        return {"PYTHONPATH": str(self.root)}

    @property
    def run_dir(self) -> Path:
        return self.out / "run"

    def checkpoint(self, epoch: int) -> Path:
        return self.run_dir / "checkpoints" / f"epoch_{epoch}.pt"

    def _train_argv(self) -> List[str]:
        return [python(), "-m", f"{PACKAGE}.main", "train", "--preset", "smoke", "--epochs", str(self.epochs)]

    def train(self, expected_steps: int, limit: Dict[str, str]) -> RunSpec:
        argv = self._train_argv() + ["--out", str(self.run_dir)] + self.device
        env = {**self.env, **limit}
        return RunSpec("train", argv, self.root, self.out / "train", env, expected_steps=expected_steps)

    def resume(self, checkpoint: Path, expected_steps: int, limit: Dict[str, str]) -> RunSpec:
        """Training again from ``checkpoint``, on the data the first run wrote, into a folder of its own."""
        data, out = str(self.run_dir / "data"), str(self.out / "resume_run")
        argv = self._train_argv() + ["--data", data, "--out", out, "--resume", str(checkpoint)] + self.device
        env = {**self.env, **limit}
        return RunSpec("resume", argv, self.root, self.out / "resume", env, expected_steps=expected_steps)

    def sample(self, checkpoint: Path, prompts: Sequence[str]) -> RunSpec:
        module = "optimizer_tool.smoke.reference_sample"
        argv = [python(), "-m", module, "--checkpoint", str(checkpoint), "--out", str(self.out / "samples")]
        return RunSpec("sample", argv + self.device + ["--", *prompts], self.root, self.out / "sample", self.env)


class _ReferenceRuns(_SessionBase):
    """The reference trainer: ``train --preset smoke``, then ``train --resume`` and ``generate`` side by side."""

    def _run_reference(self, root: Path) -> SmokeReport:
        o = self.o
        report = self.partial = SmokeReport(
            target=str(root / PACKAGE), mode="reference", out_dir=str(self.out), label=self.label
        )
        launch = _ReferenceLaunch(root, self.out, o.epochs, ["--device", o.device] if o.device else [])
        try:
            config = query_config(root, launch.env, self.deadline)
        except PresetUnreadable as exc:
            # The trainer's own code does not import: a failed smoke test, not a usage error.
            report.rows = _unreadable_preset_rows(exc)
            report.stopped = "timeout" if exc.timed_out else None
            return report
        default, smoke = config["default"], config["smoke"]
        report.overrides = reference_overrides(default, smoke, o.epochs, launch.run_dir, o.device)
        t = smoke["train"]
        batches = smoke["data"]["synthetic_samples"] // t["batch_size"]
        steps_per_epoch = batches // t["gradient_accumulation_steps"]
        self.say(describe_reference(root, report.overrides, o.epochs))

        report.series["train"] = []
        record = self._train(launch.train(steps_per_epoch * o.epochs, self._limit()), report)
        expect = _reference_expectations(smoke, o)

        resume_from, last = launch.checkpoint(o.epochs - 1), launch.checkpoint(o.epochs)
        why_no_resume, why_no_sample = self._reference_blockers(report.runs[-1], resume_from, last)
        specs: List[RunSpec] = []
        if not why_no_resume:
            specs.append(launch.resume(resume_from, steps_per_epoch, self._limit(steps_per_epoch * (o.epochs - 1))))
        if not why_no_sample:
            specs.append(launch.sample(last, o.prompts))
        results = {r.name: r for r in self._runs(specs, report)} if specs else {}
        self._judge_reference(report, record, expect, results, resume_from, (why_no_resume, why_no_sample))
        return report

    def _reference_blockers(self, train: RunResult, resume_from: Path, last: Path) -> Tuple[str, str]:
        """Why the resume run and the sample run cannot start ('' for one that can)."""
        why_no_resume = why_no_sample = self._blocked(train)
        if self.o.epochs < 2:
            why_no_resume = "needs --epochs 2 or more (resumes from the epoch N-1 checkpoint)"
        elif not why_no_resume and not resume_from.is_file():
            why_no_resume = f"no checkpoint {resume_from.name} to resume from"
        if not why_no_sample and not last.is_file():
            why_no_sample = f"no checkpoint {last.name} to sample from"
        return why_no_resume, why_no_sample

    def _judge_reference(
        self,
        report: SmokeReport,
        record: ProbeRecord,
        expect: Expectations,
        results: Dict[str, RunResult],
        resume_from: Path,
        why_not: Tuple[str, str],
    ) -> None:
        """The resumed curve into the report's series, and every row."""
        o = self.o
        why_no_resume, why_no_sample = why_not
        start_step = _checkpoint_step(record, resume_from)
        resumed = load_probe(self.out / "resume" / "probe.jsonl") if "resume" in results else None
        sampled = load_probe(self.out / "sample" / "probe.jsonl") if "sample" in results else None
        sample_saves, ema_sampling = self._reference_sample(sampled)
        if resumed is not None:
            report.series["resume"] = series(resumed, offset=start_step or 0)
        resume = checks.ResumeRuns(record, results.get("resume"), resumed, start_step, why_no_resume)
        report.rows = self._common_rows(report.runs[0], record, expect) + [
            *checks.check_resume(resume, o.resume_rtol, o.exact_resume),
            checks.check_sample(results.get("sample"), sample_saves, expect.sample_shape, why_no_sample, ema_sampling),
            checks.check_resources(record, o.max_memory, checks.unreached(report.runs[0], record)),
        ]

    def _reference_sample(
        self, sampled: Optional[ProbeRecord]
    ) -> Tuple[List[Dict[str, Any]], Optional[Dict[str, Any]]]:
        """The saves of the sample, and the verdict on sampling with the EMA weights (None: not written)."""
        # The sample itself, not the second one generate made from the copy with zeroed live weights.
        sample_saves = (
            [
                s
                for s in sampled.tensor_saves
                if s.get("final_path") == str((self.out / "samples" / SAMPLE_FILE).resolve())
            ]
            if sampled
            else []
        )
        verdict = self.out / "samples" / EMA_VERDICT_FILE
        ema_sampling = json.loads(verdict.read_text()) if verdict.is_file() else None
        return sample_saves, ema_sampling


class _CommandRuns(_SessionBase):
    """Any trainer: the user's ``--cmd``, then ``--resume-arg`` and ``--sample-cmd`` side by side."""

    def _run_cmd(self) -> SmokeReport:
        o = self.o
        cwd = o.path.resolve()
        report = self.partial = SmokeReport(target=str(cwd), mode="cmd", out_dir=str(self.out), label=self.label)
        run_dir = self.out / "run"
        argv = expand(o.cmd, out=run_dir, epochs=o.epochs)
        self._note_placeholders(report, run_dir)
        self.say(
            f"smoke-test: {shlex.join(argv)} (cwd {cwd})\n"
            "  your code runs unchanged; the probe is loaded through a sitecustomize on PYTHONPATH"
            + "".join(f"\n  {ov.key} -> {ov.after}" for ov in report.overrides)
            + "".join(f"\n  note: {n}" for n in report.notes)
        )
        train = RunSpec("train", argv, cwd, self.out / "train", {**self._snapshot_env(), **self._limit()})
        report.series["train"] = []
        started = time.time()
        record = self._train(train, report)
        expect = Expectations(
            warmup_steps=o.warmup_steps,
            max_grad_norm=o.max_grad_norm,
            max_memory=o.max_memory,
            min_loss_drop=o.min_loss_drop,
            resume_rtol=o.resume_rtol,
            exact_resume=o.exact_resume,
        )

        blocked = self._blocked(report.runs[-1])
        resume, start_step, why_no_resume = self._cmd_resume(record, blocked, cwd)
        sample, sample_saves, why_no_sample = self._cmd_sample(record, blocked, cwd)
        specs = [spec for spec in (resume, sample) if spec is not None]
        media_roots, media_since = [run_dir, cwd], started
        if sample is not None:
            media_roots, media_since = [cwd], time.time()
        results = {r.name: r for r in self._runs(specs, report)} if specs else {}
        resumed = load_probe(self.out / "resume" / "probe.jsonl") if "resume" in results else None
        if "sample" in results:
            sample_saves = load_probe(self.out / "sample" / "probe.jsonl").tensor_saves
            why_no_sample = "the sample command saved no tensor through torch.save and wrote no sample image or video"
        sample_media = self._sample_media(media_roots, media_since, sample is not None)
        if resumed is not None:
            report.series["resume"] = series(resumed, offset=start_step or 0)
        resume_runs = checks.ResumeRuns(record, results.get("resume"), resumed, start_step, why_no_resume)
        report.rows = self._common_rows(report.runs[0], record, expect) + [
            *checks.check_resume(resume_runs, o.resume_rtol, o.exact_resume),
            checks.check_sample(results.get("sample"), sample_saves, None, why_no_sample, None, sample_media),
            checks.check_resources(record, o.max_memory, checks.unreached(report.runs[0], record)),
        ]
        return report

    def _sample_media(self, roots: List[Path], since: float, sample_cmd: bool) -> List[media.MediaFile]:
        """Sample images and videos written since ``since`` (a second of slack for coarse file times) under
        ``roots``; with a --sample-cmd, every image or video in its {out} folder too."""
        found = media.find_sample_media(roots, since - 1.0)
        if sample_cmd:
            found += media.find_sample_media([self.out / "samples"], since - 1.0, every_media_file=True)
        return [media.inspect_media(p) for p in dict.fromkeys(found)]

    def _note_placeholders(self, report: SmokeReport, run_dir: Path) -> None:
        """What ``{out}`` and ``{epochs}`` in --cmd became, or what their absence means."""
        for placeholder, value in (("{out}", run_dir), ("{epochs}", self.o.epochs)):
            if placeholder in self.o.cmd:
                report.overrides.append(Override("command", placeholder, None, value, "t2s-opt"))
            else:
                report.notes.append(
                    f"--cmd has no {placeholder}: "
                    + (
                        "the trainer writes where it is configured to"
                        if placeholder == "{out}"
                        else "--epochs is not applied"
                    )
                )

    def _cmd_resume(self, record: ProbeRecord, blocked: str, cwd: Path) -> Tuple[Optional[RunSpec], Optional[int], str]:
        """The run resumed from the last snapshot saved before the final step, and that step; or why there is none."""
        o = self.o
        if not o.resume_arg:
            return None, None, 'give --resume-arg (e.g. "--resume {ckpt}") to check resuming'
        if blocked:
            return None, None, blocked
        final = record.steps[-1]["n"] if record.steps else 0
        folders = "{ckpt_dir}" in o.resume_arg
        kept = record.snapshot_dirs if folders else [s for s in record.checkpoints if s.get("snapshot")]
        snapshots = [s for s in kept if s["step"] < final]
        if not snapshots:
            what = "checkpoint folder" if folders else "checkpoint file"
            return None, None, f"no {what} saved before the last step (the probe keeps the two latest)"
        snap = snapshots[-1]
        placeholder = "{ckpt_dir}" if folders else "{ckpt}"
        resume_argv = expand(o.cmd, out=self.out / "resume_run", epochs=o.epochs) + [
            t.replace(placeholder, snap["snapshot"]) for t in shlex.split(o.resume_arg)
        ]
        spec = RunSpec("resume", resume_argv, cwd, self.out / "resume", self._limit(snap["step"]))
        return spec, snap["step"], ""

    def _snapshot_env(self) -> Dict[str, str]:
        """What the probe keeps for --resume-arg: copies of the two latest checkpoint files, or folders."""
        if not self.o.resume_arg:
            return {}
        return {
            "T2S_SMOKE_SNAPSHOTS": "2",
            "T2S_SMOKE_SNAPSHOT_DIRS": "1" if "{ckpt_dir}" in self.o.resume_arg else "0",
        }

    def _cmd_sample(
        self, record: ProbeRecord, blocked: str, cwd: Path
    ) -> Tuple[Optional[RunSpec], List[Dict[str, Any]], str]:
        """The --sample-cmd run, or the sample the training run saved itself; and why there may be none."""
        o = self.o
        if not o.sample_cmd:
            # Trainers that sample at the end of training (samples.pt) show it in the same run.
            saves = [s for s in record.tensor_saves if "sample" in Path(str(s.get("final_path"))).name.lower()]
            return None, saves, "no --sample-cmd, and the run saved no tensor or image/video named *sample*"
        ckpt = existing_checkpoint(record)
        if blocked:
            return None, [], blocked
        if ckpt is None:
            return None, [], "no checkpoint to sample from"
        sample_argv = [
            t.replace("{ckpt}", ckpt["final_path"]).replace("{out}", str(self.out / "samples"))
            for t in shlex.split(o.sample_cmd)
        ]
        return RunSpec("sample", sample_argv, cwd, self.out / "sample"), [], ""


class Session(_ReferenceRuns, _CommandRuns):
    """One target (the trainer at ``options.path``) run into ``out_dir``."""

    def run(self) -> SmokeReport:
        validate(self.o)
        if self.o.cmd is None:
            return self._run_reference(reference_root(self.o.path))
        return self._run_cmd()


def query_config(root: Path, env: Dict[str, str], deadline: Optional[float]) -> Dict[str, Any]:
    """The copy's default and smoke configs, read by its own code (a patched copy may change both).

    Runs within the smoke test's deadline; at the deadline its process tree is killed."""
    import os

    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (env["PYTHONPATH"], full_env.get("PYTHONPATH")) if p)
    config_py = root / PACKAGE / "config.py"
    timeout = None if deadline is None else deadline - time.monotonic()
    if timeout is not None and timeout <= 0:
        raise PresetUnreadable(f"--timeout reached before {config_py} was read", "", timed_out=True)
    proc = run_helper([python(), "-c", CONFIG_QUERY], root, full_env, timeout)
    if proc.timed_out:
        raise PresetUnreadable(f"reading {config_py} timed out (--timeout)", "", timed_out=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise PresetUnreadable(
            f"cannot read the smoke preset of {config_py}: {lines[-1] if lines else f'exit status {proc.returncode}'}",
            "\n".join(lines[-6:]),
        )
    config = json.loads(proc.stdout.strip().splitlines()[-1])
    origin = Path(config["origin"]).resolve().parent
    if origin != (root / PACKAGE).resolve():
        raise UsageError(f"running in {root} imports {PACKAGE} from {origin}, not from {root / PACKAGE}")
    return config


def describe_reference(root: Path, overrides: List[Override], epochs: int) -> str:
    lines = [f"smoke-test {root / PACKAGE}: python -m {PACKAGE}.main train --preset smoke (cwd {root}); it overrides:"]
    for ov in overrides:
        lines.append(f"  {ov.category:<8} {ov.key:<34} {_short(ov.before)} -> {_short(ov.after)}  ({ov.source})")
    if epochs >= 2:
        lines.append(
            f"then, side by side: train --resume from the epoch {epochs - 1} checkpoint, and generate from the last one"
        )
    else:
        lines.append("then generate from the last checkpoint (one epoch: nothing to resume from)")
    return "\n".join(lines)


def _unreadable_preset_rows(exc: PresetUnreadable) -> List[Row]:
    """A failed exit row that says why; every other check not run."""
    return [Row("exit", checks.TITLES["exit"], checks.FAIL, str(exc), exc.detail)] + [
        Row(key, title, checks.NA, "not run: the smoke preset could not be read")
        for key, title in checks.TITLES.items()
        if key != "exit"
    ]


def _reference_expectations(smoke: Dict[str, Dict[str, Any]], o: SmokeOptions) -> Expectations:
    t = smoke["train"]
    return Expectations(
        base_lr=t["learning_rate"],
        warmup_steps=t["warmup_steps"],
        max_grad_norm=t["max_grad_norm"],
        # A patched config names its EMA (use_ema, or ema_decay as `apply` adds it): then it must be saved.
        ema_on=bool(t["use_ema"]) if "use_ema" in t else (True if "ema_decay" in t else None),
        sample_shape=(
            len(o.prompts),
            3,
            smoke["data"]["num_frames"],
            smoke["data"]["image_size"],
            smoke["data"]["image_size"],
        ),
        max_memory=o.max_memory,
        min_loss_drop=o.min_loss_drop,
        resume_rtol=o.resume_rtol,
        exact_resume=o.exact_resume,
    )


def validate(options: SmokeOptions) -> None:
    """Usage errors, found before any folder is made or process started."""
    o = options
    if o.timeout is not None and not (
        isinstance(o.timeout, (int, float)) and math.isfinite(o.timeout) and o.timeout > 0
    ):
        raise UsageError(f"--timeout {o.timeout}: must be a number of seconds greater than 0")
    if o.max_steps is not None and o.max_steps < 1:
        raise UsageError(f"--max-steps {o.max_steps}: must be 1 or more optimizer steps")
    if o.cmd is None:
        if reference_root(o.path) is None:
            raise UsageError(
                f"{o.path}: not a reference_trainer layout (a '{PACKAGE}' package with "
                f'{", ".join(PACKAGE_FILES)}); for any other trainer pass --cmd "python train.py ..."'
            )
        for flag, value in (("--resume-arg", o.resume_arg), ("--sample-cmd", o.sample_cmd)):
            if value:
                raise UsageError(f"{flag} is for --cmd trainers; the reference trainer resumes and samples itself")
        return
    if not o.path.is_dir():
        raise UsageError(f"{o.path}: with --cmd, PATH is the folder the command runs in; not a folder")
    try:
        if not shlex.split(o.cmd):
            raise UsageError("--cmd is empty")
        for extra in (o.resume_arg, o.sample_cmd):
            if extra:
                shlex.split(extra)
    except ValueError as exc:  # unbalanced quotes
        raise UsageError(f"cannot split the command line: {exc}") from exc
    if o.resume_arg and "{out}" not in o.cmd:
        raise UsageError("--resume-arg needs {out} in --cmd, so the resumed run writes to its own folder")
    if o.resume_arg and ("{ckpt}" in o.resume_arg) == ("{ckpt_dir}" in o.resume_arg):
        raise UsageError(
            "--resume-arg must contain one of {ckpt} (a checkpoint file) or {ckpt_dir} (a checkpoint folder, "
            'such as accelerate\'s checkpoint-500/), e.g. --resume-arg "--resume {ckpt}"'
        )


def partial_rows(report: SmokeReport, options: SmokeOptions) -> List[Row]:
    """Rows for a run that was interrupted: judged on what the probe recorded until the stop."""
    if not report.runs:
        return []
    train = report.runs[0]
    record = load_probe(Path(train.probe))
    expect = Expectations(
        warmup_steps=options.warmup_steps,
        max_grad_norm=options.max_grad_norm,
        min_loss_drop=options.min_loss_drop,
        max_memory=options.max_memory,
    )
    not_run = f"not judged: the smoke test was {report.stopped or 'stopped'}"
    why = checks.unreached(train, record)
    step_rows = (
        checks.not_judged(checks.STEP_CHECKS[:-1], why)
        if why
        else [
            checks.check_finite(record),
            checks.check_loss_falls(record, expect.min_loss_drop),
            checks.check_lr_schedule(record, expect),
            checks.check_grad_clipping(record, expect),
        ]
    )
    return [
        checks.check_exit(train, record),
        *step_rows,
        *checks.not_judged(("ema_checkpoint", *checks.RESUME_CHECKS, "sample"), not_run),
        checks.check_resources(record, options.max_memory, why),
    ]


# ---------------------------------------------------------------------------- helpers


def reference_root(path: Path) -> Optional[Path]:
    """The folder to run in: ``path`` if it holds the package, its parent if it is the package."""
    path = path.resolve()
    if all((path / PACKAGE / f).is_file() for f in PACKAGE_FILES):
        return path
    if path.name == PACKAGE and all((path / f).is_file() for f in PACKAGE_FILES):
        return path.parent
    return None


def reference_overrides(
    default: Dict[str, Dict[str, Any]], smoke: Dict[str, Dict[str, Any]], epochs: int, out: Path, device: Optional[str]
) -> List[Override]:
    changed: Dict[str, Override] = {}
    for section, values in smoke.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            before = default.get(section, {}).get(key)
            if before != value:
                changed[name] = Override(_category(name), name, before, value, "smoke preset")
    for name, value in (("train.num_epochs", epochs), ("train.output_dir", str(out))):
        before = default["train"].get(name.split(".")[1])
        if smoke["train"].get(name.split(".")[1]) != value:
            changed[name] = Override(_category(name), name, before, value, "t2s-opt")
    if device:
        changed["device"] = Override("device", "--device", None, device, "t2s-opt")
    order = [c for c, _ in OVERRIDE_CATEGORIES]
    return sorted(changed.values(), key=lambda ov: (order.index(ov.category) if ov.category in order else 99, ov.key))


def _category(name: str) -> str:
    for category, prefixes in OVERRIDE_CATEGORIES:
        if any(name == p or (p.endswith(".") and name.startswith(p)) for p in prefixes):
            return category
    return "other"


def _short(value: Any) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 48 else "..." + text[-45:]


def expand(command: str, out: Path, epochs: int) -> List[str]:
    """shlex-split first, then fill placeholders per word: paths with spaces stay one argument."""
    return [t.replace("{out}", str(out)).replace("{epochs}", str(epochs)) for t in shlex.split(command)]


def _checkpoint_step(record: ProbeRecord, path: Path) -> Optional[int]:
    target = str(path.resolve())
    for save in record.checkpoints:
        if save.get("final_path") == target:
            return save.get("step")
    return None


def series(record: ProbeRecord, offset: int = 0) -> List[Dict[str, Any]]:
    """Per-step values for the report and the plot (steps numbered from ``offset``)."""
    rows = []
    for s in record.steps:
        clip = (s.get("clips") or [{}])[0]
        rows.append(
            {
                "step": s["n"] + offset,
                "t": s["t"],
                "loss": s.get("loss"),
                "lr": (s.get("lr") or [None])[0],
                "grad_norm": s.get("grad_norm"),
                "clip_pre": clip.get("pre"),
                "clip_post": clip.get("post"),
                "max_norm": clip.get("max_norm"),
            }
        )
    return rows
