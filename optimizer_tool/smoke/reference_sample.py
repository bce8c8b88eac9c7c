"""Run the reference trainer's ``generate`` and keep the generated tensor for the sample check.

    python -m optimizer_tool.smoke.reference_sample --checkpoint CKPT --out DIR [--steps N] [--device D] PROMPT...

Run with the trainer copy's folder as cwd, so ``reference_trainer`` is that copy. ``generate``
writes GIFs, which cannot show a NaN (they are clamped to uint8); so the videos that
``Trainer.generate_samples`` returns are also written to ``DIR/sample.pt`` with ``torch.save``,
where the probe records their shape and non-finite count. The trainer's code is not changed:
the method is wrapped in this process only.

When the checkpoint holds EMA weights, ``generate`` runs a second time from a copy whose live
weights are zeroed: sampling with the EMA weights gives the same videos; sampling with the live
ones does not. The verdict goes to ``DIR/ema_sampling.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

SAMPLE_FILE = "sample.pt"
EMA_VERDICT_FILE = "ema_sampling.json"
MODEL_KEY = "model_state_dict"


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)

    import torch

    from reference_trainer import main as reference_main
    from reference_trainer.trainer import Trainer

    keep = _keep_samples(Trainer, args.out / SAMPLE_FILE)
    print(f"reference_trainer from {Path(reference_main.__file__).parent}", file=sys.stderr)

    def generate(checkpoint: str, out: Path) -> int:
        cli = ["generate", "--checkpoint", checkpoint, "--out", str(out)]
        for prompt in args.prompts:
            cli += ["--prompt", prompt]
        if args.steps is not None:
            cli += ["--steps", str(args.steps)]
        if args.device is not None:
            cli += ["--device", args.device]
        return reference_main.main(cli)

    status = generate(args.checkpoint, args.out)
    if status != 0:
        return status
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    ema_keys = [k for k in checkpoint if "ema" in str(k).lower()]
    verdict = {"ema_keys": ema_keys}
    if ema_keys and MODEL_KEY in checkpoint:
        status = _sample_with_live_weights_zeroed(checkpoint, args.out, keep, generate, verdict)
        if status != 0:
            return status
    (args.out / EMA_VERDICT_FILE).write_text(json.dumps(verdict) + "\n", encoding="utf-8")
    return 0


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m optimizer_tool.smoke.reference_sample")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--device")
    parser.add_argument("prompts", nargs="+")
    return parser.parse_args(argv)


def _keep_samples(trainer_class: Any, path: Path) -> Dict[str, Path]:
    """Wrap ``generate_samples`` (in this process only) so the videos it returns are also written with
    ``torch.save``; to ``keep["path"]``, which the caller may point elsewhere for a later run."""
    import torch

    generate_samples = trainer_class.generate_samples
    keep = {"path": path}

    def generate_and_keep(self, *a, **kw):
        videos = generate_samples(self, *a, **kw)
        keep["path"].parent.mkdir(parents=True, exist_ok=True)
        torch.save(videos, keep["path"])
        return videos

    trainer_class.generate_samples = generate_and_keep
    return keep


def _sample_with_live_weights_zeroed(
    checkpoint: Dict[str, Any],
    out: Path,
    keep: Dict[str, Path],
    generate: Callable[[str, Path], int],
    verdict: Dict[str, Any],
) -> int:
    """Generate again from a copy whose live weights are zeroed; into ``verdict``: whether the sample stayed
    the same (it was made with the EMA weights). Returns generate's exit status."""
    import torch

    zeroed = {
        **checkpoint,
        MODEL_KEY: {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in checkpoint[MODEL_KEY].items()},
    }
    zeroed_path = out / "live_weights_zeroed.pt"
    torch.save(zeroed, zeroed_path)
    keep["path"] = out / "live_zeroed" / SAMPLE_FILE
    status = generate(str(zeroed_path), out / "live_zeroed")
    if status != 0:
        return status
    a = torch.load(out / SAMPLE_FILE, weights_only=True)
    b = torch.load(keep["path"], weights_only=True)
    verdict.update(
        same_with_live_weights_zeroed=bool(torch.equal(a, b)),
        max_abs_diff=float((a.float() - b.float()).abs().max()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
