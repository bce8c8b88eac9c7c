"""``python -m t2s.eval``: score a checkpoint's clips; train the gloss recogniser; score real or noise clips.

    python -m t2s.eval evaluate --checkpoint CKPT [--num-per-gloss N] [--recogniser PATH] [--i3d PATH]
                                [--out JSON] [--samples DIR] [--steps N] [--device DEV]
    python -m t2s.eval train-recogniser [--out PATH] [--size 64] [--frames 16] [--epochs 8]
    python -m t2s.eval reference --kind real|noise [--per-gloss 4] [--recogniser PATH] [--out JSON]

(``evaluate`` lives here, not in ``reference_trainer.main``: t2s-opt's tests quote and analyse
the reference trainer, and an evaluate command there changed what ``t2s-opt apply`` finds.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from reference_trainer.trainer import CheckpointError
from t2s.data.synthetic import GLOSSES
from t2s.models import TextEncoderLoadError

from .cache import default_recogniser_path, obtain_recogniser
from .clips import HELD_OUT_SEED, per_gloss_labels, render_real_clips
from .evaluate import EvaluationResult, evaluate_clips
from .i3d import load_i3d
from .recogniser import RecogniserError, save_recogniser
from .sampling import checkpoint_clip_shape, sample_checkpoint
from .training import TrainSettings, train_recogniser

__all__ = ["main"]


def _add_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=64, help="frame width and height in pixels (default 64)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")


def _add_scoring(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recogniser", type=Path, help="recogniser checkpoint (default: the cached one for the size)")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m t2s.eval", description="Evaluation of generated sign clips.")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="sample every gloss from a reference_trainer checkpoint and score the clips")
    ev.add_argument("--checkpoint", type=Path, required=True)
    ev.add_argument("--num-per-gloss", type=int, default=4, help="clips sampled per gloss (default 4)")
    ev.add_argument("--i3d", type=Path, help="local TorchScript I3D: Fréchet distance on its features (true FVD)")
    ev.add_argument("--samples", type=Path, help="folder for the sampled GIFs (default: <run>/eval_samples)")
    ev.add_argument("--steps", type=int, help="DDIM steps (default: train.num_inference_steps of the checkpoint)")
    ev.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    _add_scoring(ev)
    train = sub.add_parser("train-recogniser", help="train the gloss recogniser and cache its checkpoint")
    train.add_argument("--out", type=Path, help="checkpoint path (default: the cache path evaluate looks in)")
    _add_size(train)
    defaults = TrainSettings()
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--train-per-gloss", type=int, default=defaults.train_per_gloss)
    train.add_argument("--test-per-gloss", type=int, default=defaults.test_per_gloss)
    train.add_argument("--seed", type=int, default=defaults.seed)

    ref = sub.add_parser("reference", help="score held-out real clips (the ceiling) or uniform noise (the floor)")
    ref.add_argument("--kind", choices=("real", "noise"), default="real")
    ref.add_argument("--per-gloss", type=int, default=4)
    _add_scoring(ref)
    _add_size(ref)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    settings = TrainSettings(
        num_frames=args.frames,
        image_size=args.size,
        train_per_gloss=args.train_per_gloss,
        test_per_gloss=args.test_per_gloss,
        epochs=args.epochs,
        seed=args.seed,
    )
    out = args.out or default_recogniser_path(args.frames, args.size)
    trained = train_recogniser(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    save_recogniser(trained.model, out, trained.metadata)
    print(f"held-out top-1 accuracy {trained.held_out_accuracy:.4f} ({trained.seconds:.0f}s); saved {out}")
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    recogniser, metadata = obtain_recogniser(args.recogniser, args.frames, args.size)
    real = render_real_clips(args.per_gloss, args.frames, args.size, seed=HELD_OUT_SEED)
    clips = real.clips
    if args.kind == "noise":
        clips = torch.rand(clips.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    result = evaluate_clips(clips, real.glosses, recogniser, n_resamples=args.resamples)
    result.extra.update(clips=args.kind, recogniser=metadata)
    return _report(result, args.out)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.num_per_gloss < 1:
        raise ValueError(f"--num-per-gloss must be >= 1, got {args.num_per_gloss}")
    checkpoint = args.checkpoint
    frames, size = checkpoint_clip_shape(checkpoint)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # The recogniser and I3D first: a bad path fails before the (long) sampling.
    recogniser, metadata = obtain_recogniser(args.recogniser, frames, size, device)
    features = load_i3d(args.i3d, device) if args.i3d is not None else None
    samples = args.samples or checkpoint.resolve().parent.parent / "eval_samples"
    clips = sample_checkpoint(checkpoint, GLOSSES, args.num_per_gloss, samples, args.steps, device)
    glosses = per_gloss_labels(args.num_per_gloss)
    result = evaluate_clips(
        clips,
        glosses,
        recogniser,
        features=features,
        n_resamples=args.resamples,
        features_name=f"I3D ({args.i3d})" if features is not None else None,
    )
    result.extra.update(checkpoint=str(checkpoint), samples=str(samples), recogniser=metadata)
    return _report(result, args.out)


def _report(result: EvaluationResult, out: Optional[Path]) -> int:
    print(result.table())
    if out is not None:
        print(f"report: {result.write_json(out)}")
    return 0


COMMANDS = {"evaluate": cmd_evaluate, "train-recogniser": cmd_train, "reference": cmd_reference}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except (RecogniserError, ValueError, FileNotFoundError, CheckpointError, TextEncoderLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
