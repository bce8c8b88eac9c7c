"""Command line of the reference trainer.

    python -m reference_trainer.main train [--epochs N] [--config FILE] [--data DIR] [--out DIR]
                                           [--resume CKPT|auto | --overwrite] [--preset smoke]
                                           [--set KEY=VALUE ...]
    python -m reference_trainer.main generate --checkpoint CKPT --prompt TEXT [--prompt TEXT ...]
                                              [--out DIR] [--steps N]

An --out folder that already holds a run is refused unless --resume (continue it) or --overwrite
(delete it first) says what to do with it (reference_trainer/run_dir.py; docs/reliability.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

import torch
from rich.logging import RichHandler

from t2s.data import DatasetError, ManifestDataset, generate_synthetic_dataset
from t2s.models import TextEncoderLoadError

from . import run_dir
from .config import PRESETS, Config, ConfigError, load_config, validate
from .trainer import CheckpointError, Trainer, console, read_checkpoint_config, sample_filename

logger = logging.getLogger("reference_trainer")


class UsageError(Exception):
    """Bad input from the command line; reported without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference_trainer.main", description="Train or sample the text-to-sign video diffusion model."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume training) the UNet3D")
    train.add_argument("--epochs", type=int, help="total number of epochs (train.num_epochs)")
    train.add_argument("--config", type=Path, help="YAML/TOML file with model/data/train sections, or a config.py copy")
    train.add_argument("--data", type=Path, help="folder holding manifest.jsonl, or the manifest file itself")
    train.add_argument("--out", type=Path, help="output folder for checkpoints, logs and metrics (train.output_dir)")
    train.add_argument(
        "--resume", type=Path, metavar="CKPT|auto",
        help="checkpoint to continue from; 'auto': the newest complete checkpoint in OUT/checkpoints (a new run "
        "when there is none); a path ending in latest.pt also means the newest complete checkpoint beside it",
    )
    train.add_argument(
        "--overwrite", action="store_true",
        help="replace the run that --out already holds: its checkpoints, metrics.jsonl and tensorboard/ are deleted",
    )
    train.add_argument("--preset", choices=sorted(PRESETS), help="start from a named config (smoke: tiny 2-epoch run)")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.learning_rate=1e-4 (repeatable)",
    )
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")

    gen = sub.add_parser("generate", help="sample one clip per prompt from a checkpoint")
    gen.add_argument("--checkpoint", type=Path, required=True)
    gen.add_argument("--prompt", action="append", required=True, help="text prompt (repeatable)")
    gen.add_argument("--out", type=Path, help="output folder (default: <run>/samples next to the checkpoints folder)")
    gen.add_argument("--steps", type=int, help="DDIM steps (default: train.num_inference_steps of the checkpoint)")
    gen.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return parser


def set_threads(config: Config) -> None:
    if config.train.num_threads > 0:
        torch.set_num_threads(config.train.num_threads)


def prepare_data(config: Config) -> Path:
    """Path of the training manifest; generates the synthetic data set first when the config asks for it."""
    data = config.data
    if data.data_dir is None:
        if data.synthetic_samples == 0:
            raise UsageError(
                "no training data: pass --data DIR (a folder with manifest.jsonl), set data.data_dir in the "
                "config, or run with --preset smoke to train on generated synthetic clips"
            )
        data_dir = Path(config.train.output_dir) / "data"
        logger.info("generating %d synthetic clips into %s", data.synthetic_samples, data_dir)
        manifest = generate_synthetic_dataset(
            data_dir,
            num_samples=data.synthetic_samples,
            num_frames=data.num_frames,
            image_size=data.image_size,
            seed=config.train.seed,
        )
        # Recorded in the checkpoint's config, so a resumed run finds the same clips.
        data.data_dir, data.manifest = str(data_dir), Path(manifest).name
        return Path(manifest)
    data_dir = Path(data.data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"data folder not found: {data_dir}")
    manifest = Path(data.manifest) if Path(data.manifest).is_absolute() else data_dir / data.manifest
    if not manifest.is_file():
        raise UsageError(
            f"manifest not found: {manifest}; point --data at a folder holding {data.manifest} "
            "(or at the manifest file), or set data.manifest"
        )
    return manifest


def cmd_train(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides, args.preset)
    if args.epochs is not None:
        config.train.num_epochs = args.epochs
    if args.out is not None:
        config.train.output_dir = str(args.out)
    if args.data is not None:
        if args.data.is_file():
            config.data.data_dir, config.data.manifest = str(args.data.parent), args.data.name
        else:
            config.data.data_dir = str(args.data)
    validate(config)
    out = Path(config.train.output_dir)
    run_dir.check_request(out, args.resume, args.overwrite)

    set_threads(config)
    with run_dir.lock(out):  # one trainer per folder; refuses or clears a previous run before anything is written
        checkpoint = run_dir.prepare(out, args.resume, args.overwrite, config.train.num_epochs)
        manifest = prepare_data(config)
        dataset = ManifestDataset(manifest, num_frames=config.data.num_frames, image_size=config.data.image_size)
        trainer = Trainer(config, train_dataset=dataset, device=args.device)
        if checkpoint is not None:
            trainer.load_checkpoint(checkpoint)
        trainer.train()
    console.print(
        f"done: step {trainer.global_step}; checkpoints in {out / 'checkpoints'}, metrics in {trainer.metrics_path}",
        highlight=False, markup=False, soft_wrap=True,
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    args.checkpoint = run_dir.resolve_latest(args.checkpoint)  # a kill may have left latest.pt behind an epoch file
    if not args.checkpoint.is_file():
        raise UsageError(f"checkpoint not found: {args.checkpoint}")
    config = read_checkpoint_config(args.checkpoint)
    if args.steps is not None and not 1 <= args.steps <= config.train.num_train_timesteps:
        raise UsageError(f"--steps must be between 1 and {config.train.num_train_timesteps}, got {args.steps}")
    out = args.out if args.out is not None else args.checkpoint.resolve().parent.parent / "samples"
    set_threads(config)
    trainer = Trainer(config, device=args.device)
    trainer.load_checkpoint(args.checkpoint)
    trainer.generate_samples(args.prompt, num_inference_steps=args.steps, output_dir=out)
    for i, prompt in enumerate(args.prompt):
        print(f"{out / sample_filename(i, prompt)}\t{prompt}")  # results on stdout, one per line
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)], force=True
    )
    try:
        return cmd_train(args) if args.command == "train" else cmd_generate(args)
    except (
        UsageError, ConfigError, CheckpointError, DatasetError, TextEncoderLoadError, FileNotFoundError,
        run_dir.RunDirError,
    ) as exc:
        message = f"error: {exc}"
        if isinstance(exc, TextEncoderLoadError):
            message += "\nWith this trainer, point at a local copy with --set model.text_encoder=/path/to/folder."
        # markup off: messages hold paths and [sections]; no wrapping: paths stay greppable
        console.print(message, style="bold red", highlight=False, markup=False, soft_wrap=True)
        return 2

if __name__ == "__main__":
    sys.exit(main())
