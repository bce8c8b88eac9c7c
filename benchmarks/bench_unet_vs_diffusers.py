"""Forward+backward time of t2s UNet3D vs diffusers' UNet3DConditionModel, side by side.

Both models get the same channel ladder (96, 192, 192, 192), two residual
blocks per level, attention at the two lowest-resolution levels with 64-dim
heads and 512-dim text context, so their parameter counts are close
(44.2M vs 46.6M at 3 channels). Iterations alternate between the two models
so that load from other processes hits both alike; the median is reported.

    python benchmarks/bench_unet_vs_diffusers.py                      # 2x3x16x64x64, the training shape
    python benchmarks/bench_unet_vs_diffusers.py --batch 1 --frames 8 --size 32 --iters 5   # CPU-sized

On CUDA the step runs under bf16 autocast (as the trainer does); on CPU in float32.
Needs diffusers (bench extra): pip install diffusers
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from t2s.models import UNet3D, UNet3DConfig, count_parameters  # noqa: E402

CHANNELS = (96, 192, 192, 192)
HEAD_DIM = 64
CONTEXT_DIM = 512


def build_ours(args) -> UNet3D:
    cfg = UNet3DConfig.preset(
        "default", in_channels=args.channels, out_channels=args.channels, image_size=args.size, num_frames=args.frames
    )
    assert tuple(cfg.model_channels * m for m in cfg.channel_mult) == CHANNELS, "keep the two ladders in sync"
    return UNet3D(cfg)


def build_diffusers(args) -> torch.nn.Module:
    try:
        from diffusers import UNet3DConditionModel
    except ImportError:
        sys.exit("this benchmark needs diffusers: pip install diffusers  (or: pip install -e '.[bench]')")
    return UNet3DConditionModel(
        sample_size=args.size,
        in_channels=args.channels,
        out_channels=args.channels,
        down_block_types=("DownBlock3D", "DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
        up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D", "UpBlock3D"),
        block_out_channels=CHANNELS,
        layers_per_block=2,
        cross_attention_dim=CONTEXT_DIM,
        # UNet3DConditionModel reads attention_head_dim as the number of heads
        # (a known naming quirk), so this gives 64-dim heads like ours.
        attention_head_dim=CHANNELS[-1] // HEAD_DIM,
        norm_num_groups=32,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=3, help="3 for pixels, 4 for latents")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="height = width; divisible by 8")
    parser.add_argument("--context-len", type=int, default=32, help="text tokens")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast = device.type == "cuda"

    torch.manual_seed(0)
    models = {"ours": build_ours(args).to(device).train(), "diffusers": build_diffusers(args).to(device).train()}
    x = torch.randn(args.batch, args.channels, args.frames, args.size, args.size, device=device)
    t = torch.randint(0, 1000, (args.batch,), device=device)
    context = torch.randn(args.batch, args.context_len, CONTEXT_DIM, device=device)

    # Ours also applies its text key-padding mask (all tokens kept here), as it
    # does in training; diffusers' UNet3D has no text mask input.
    mask = torch.ones(args.batch, args.context_len, dtype=torch.bool, device=device)
    forwards = {
        "ours": lambda: models["ours"](x, t, context, mask),
        "diffusers": lambda: models["diffusers"](x, t, encoder_hidden_states=context).sample,
    }

    def step(name: str) -> float:
        model = models[name]
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = forwards[name]()
        out.float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    peak = {}
    for name in models:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.warmup):
            step(name)
        if device.type == "cuda":
            peak[name] = torch.cuda.max_memory_allocated() / 2**30

    times = {name: [] for name in models}
    for _ in range(args.iters):
        for name in models:  # alternate, so background load hits both models alike
            times[name].append(step(name))

    precision = "bf16 autocast" if autocast else "float32"
    print(f"device {device} ({precision}), threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(
        f"input [{args.batch}, {args.channels}, {args.frames}, {args.size}, {args.size}], "
        f"context [{args.batch}, {args.context_len}, {CONTEXT_DIM}], "
        f"forward+backward, {args.warmup} warmup + {args.iters} timed iterations"
    )
    for name, model in models.items():
        ts = sorted(times[name])
        line = (
            f"{name:>9}: {count_parameters(model) / 1e6:6.2f}M params  median {statistics.median(ts) * 1e3:9.1f} ms"
            f"  (min {ts[0] * 1e3:.1f}, max {ts[-1] * 1e3:.1f})"
        )
        if name in peak:
            line += f"  peak {peak[name]:.2f} GiB"
        print(line)
    ratio = statistics.median(times["ours"]) / statistics.median(times["diffusers"])
    print(f"ratio ours/diffusers: {ratio:.2f}")


if __name__ == "__main__":
    main()
