"""One ablation process, run by ``optimizer_tool.ablate.runner`` inside an arm's copy of the trainer.

    python -m optimizer_tool.ablate.job prepare --out PREPARED.json --data DIR --budget-steps N
                                                [--recogniser PATH] [--preset P] [--set K=V ...]
    python -m optimizer_tool.ablate.job run --prepared PREPARED.json --seed S --out DIR
                                            [--device D] [--num-per-gloss N] [--resamples R]
                                            [--preset P] [--set K=V ...]

The working folder holds the arm's ``reference_trainer`` package, and this process refuses to go on
if ``import reference_trainer`` finds another copy (the editable install's, say): a patched arm must
never be measured with the unpatched code.

``prepare`` (in the baseline's copy): reads the trainer's config (preset + overrides), writes the
synthetic clips every arm and seed trains on (seed 0; or takes ``data.data_dir`` when the config
names one), maps the step budget to epochs (the trainer counts epochs, not steps), and obtains the
gloss recogniser for the clip size (``t2s.eval``'s cache; trained there on first use).

``run``: ``reference_trainer.main train --resume auto`` (a killed run continues) with
``train.seed=S``, then ``t2s.eval evaluate`` on the last checkpoint with the arm's own sampler (EMA
weights, v-prediction, ...), in one process so the two share one interpreter start. It writes
``OUT/result.json`` last, atomically: its presence means the seed is done.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

PACKAGE = "reference_trainer"
RESULT = "result.json"
PREPARED = "prepared.json"
DATA_SEED = 0


class JobError(Exception):
    """A job cannot go on; the message names the file or field and what to do."""


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="the trainer's preset (none: its defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optimizer_tool.ablate.job")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="data, step budget and recogniser shared by every arm")
    prep.add_argument("--out", type=Path, required=True, help="where to write prepared.json")
    prep.add_argument("--data", type=Path, required=True, help="folder for the synthetic clips")
    prep.add_argument("--budget-steps", type=int, required=True)
    prep.add_argument("--recogniser", type=Path)
    _config_args(prep)
    run = sub.add_parser("run", help="train one seed of this arm and evaluate its last checkpoint")
    run.add_argument("--prepared", type=Path, required=True)
    run.add_argument("--seed", type=int, required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--device")
    run.add_argument("--num-per-gloss", type=int, default=2)
    run.add_argument("--resamples", type=int, default=1000)
    _config_args(run)
    return parser


def check_origin() -> None:
    """The trainer this process imports is the one in the working folder, not another copy."""
    import reference_trainer

    found = Path(reference_trainer.__file__).resolve().parent
    wanted = (Path.cwd() / PACKAGE).resolve()
    if found != wanted:
        raise JobError(f"`import {PACKAGE}` found {found}, not the arm's copy {wanted}; run from the arm's folder")


def _preset_args(preset: Optional[str]) -> list[str]:
    return ["--preset", preset] if preset else []


def _set_args(overrides: Sequence[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Written whole or not at all (a temporary file renamed): a file that exists is complete."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- prepare


def _manifest(config: Any, data_dir: Path) -> Path:
    data = config.data
    if data.data_dir:
        manifest = Path(data.manifest)
        return manifest if manifest.is_absolute() else Path(data.data_dir) / manifest
    if data.synthetic_samples < 1:
        raise JobError(
            "the config names no data: set data.data_dir, or data.synthetic_samples > 0 (--set "
            "data.synthetic_samples=64) for generated clips"
        )
    from t2s.data import generate_synthetic_dataset

    return Path(
        generate_synthetic_dataset(
            data_dir, data.synthetic_samples, num_frames=data.num_frames, image_size=data.image_size, seed=DATA_SEED
        )
    )


def steps_per_epoch(clips: int, batch_size: int, accumulation: int) -> int:
    """Optimizer steps per epoch as the reference trainer counts them (drop_last batches, whole windows)."""
    return (clips // batch_size) // accumulation


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    from reference_trainer.config import load_config

    config = load_config(overrides=args.overrides, preset=args.preset)
    manifest = _manifest(config, args.data)
    if not manifest.is_file():
        raise JobError(f"manifest not found: {manifest} (data.data_dir / data.manifest)")
    clips = sum(1 for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip())
    train = config.train
    per_epoch = steps_per_epoch(clips, train.batch_size, train.gradient_accumulation_steps)
    if per_epoch < 1:
        raise JobError(
            f"{clips} clips in {manifest} make no optimizer step of train.batch_size={train.batch_size} x "
            f"train.gradient_accumulation_steps={train.gradient_accumulation_steps}; add clips (data.synthetic_samples)"
        )
    epochs = max(1, math.ceil(args.budget_steps / per_epoch))
    from t2s.eval.cache import obtain_recogniser

    _, recogniser = obtain_recogniser(args.recogniser, config.data.num_frames, config.data.image_size)
    prepared = {
        "data": str(manifest),
        "clips": clips,
        "clip_shape": [config.data.num_frames, config.data.image_size, config.data.image_size],
        "batch_size": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "budget_steps": args.budget_steps,
        "steps_per_epoch": per_epoch,
        "epochs": epochs,
        "steps": epochs * per_epoch,
        "recogniser": recogniser["path"],
        "recogniser_info": recogniser,
    }
    write_json(args.out, prepared)
    return prepared


# ---------------------------------------------------------------------------- run


def _final_step(run_dir: Path) -> int:
    import torch

    from reference_trainer import run_dir as runs

    checkpoint = runs.resolve_latest(run_dir / "checkpoints" / "latest.pt")
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def _train_argv(args: argparse.Namespace, prepared: dict[str, Any], run_dir: Path) -> list[str]:
    return [
        "train", *_preset_args(args.preset), "--data", prepared["data"], "--out", str(run_dir), "--resume", "auto",
        "--epochs", str(prepared["epochs"]), *_set_args([*args.overrides, f"train.seed={args.seed}"]),
        *(["--device", args.device] if args.device else []),
    ]  # fmt: skip


def _evaluate_argv(args: argparse.Namespace, prepared: dict[str, Any], run_dir: Path) -> list[str]:
    return [
        "evaluate", "--checkpoint", str(run_dir / "checkpoints" / "latest.pt"),
        "--num-per-gloss", str(args.num_per_gloss), "--recogniser", prepared["recogniser"],
        "--out", str(args.out / "evaluation.json"), "--samples", str(args.out / "eval_samples"),
        "--resamples", str(args.resamples), *(["--device", args.device] if args.device else []),
    ]  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    from reference_trainer.main import main as train_main
    from t2s.eval.cli import main as evaluate_main
    from t2s.eval.evaluate import METRICS

    prepared = json.loads(args.prepared.read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "run"
    train_argv, evaluate_argv = _train_argv(args, prepared, run_dir), _evaluate_argv(args, prepared, run_dir)
    started = time.monotonic()
    if train_main(train_argv) != 0:
        raise JobError(f"training failed: python -m {PACKAGE}.main {shlex.join(train_argv)}")
    trained = time.monotonic()
    if evaluate_main(evaluate_argv) != 0:
        raise JobError(f"evaluation failed: python -m t2s.eval {shlex.join(evaluate_argv)}")
    evaluation = json.loads((args.out / "evaluation.json").read_text(encoding="utf-8"))
    result = {
        "seed": args.seed,
        "steps": _final_step(run_dir),
        "epochs": prepared["epochs"],
        "seconds": {"train": round(trained - started, 1), "evaluate": round(time.monotonic() - trained, 1)},
        "metrics": {name: {**value, "better": METRICS[name][1]} for name, value in evaluation["metrics"].items()},
        "commands": {
            "cwd": str(Path.cwd()),
            "train": f"python -m {PACKAGE}.main {shlex.join(train_argv)}",
            "evaluate": f"python -m t2s.eval {shlex.join(evaluate_argv)}",
        },
        "evaluation": str(args.out / "evaluation.json"),
    }
    write_json(args.out / RESULT, result)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_origin()
        prepare(args) if args.command == "prepare" else run(args)
    except (JobError, ValueError, FileNotFoundError) as exc:  # ValueError: the trainer's ConfigError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
