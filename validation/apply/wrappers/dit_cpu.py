"""DiT / SiT-style DDP scripts on one CPU process, with a random tiny VAE.

python dit_cpu.py [--image-size 256] [--n 16] SCRIPT -- ARGS...

* torch.distributed: one process, gloo (MASTER_ADDR/PORT, RANK, WORLD_SIZE set here), DDP without
  device_ids; torch.cuda.set_device/synchronize are no-ops;
* the script's `assert torch.cuda.is_available()` and `device = rank % torch.cuda.device_count()`
  are replaced (source substitution) by `device = "cpu"`;
* `AutoencoderKL.from_pretrained("stabilityai/sd-vae-ft-*")` (a download) -> a randomly
  initialised diffusers AutoencoderKL with the same interface and the same 8x downsampling and 4
  latent channels, but 8 channels per block: the latents are not meaningful, the training loop is
  the script's own;
* wandb stubbed; a folder of n random PNGs (image-size) is written to ./fake_images (--data-path).
"""

import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import image_folder, run_script, seed, small_loader  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--sub", action="append", default=[])
    ap.add_argument("script")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    seed(0)

    import torch
    import torch.distributed as dist
    import torch.nn.parallel

    _init = dist.init_process_group

    def init_process_group(backend=None, *x, **k):
        k.pop("device_id", None)
        return _init("gloo", *x, **k)

    dist.init_process_group = init_process_group
    _ddp = torch.nn.parallel.DistributedDataParallel

    class DDP(_ddp):
        def __init__(self, module, *x, device_ids=None, output_device=None, **k):
            super().__init__(module, *x, **k)

    torch.nn.parallel.DistributedDataParallel = DDP
    torch.cuda.set_device = lambda *x, **k: None
    torch.cuda.synchronize = lambda *x, **k: None

    from diffusers.models import AutoencoderKL

    def tiny_vae(cls, *x, **k):
        torch.manual_seed(0)
        print(f"[wrapper] AutoencoderKL.from_pretrained{x} -> random tiny AutoencoderKL", file=sys.stderr)
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            sample_size=a.image_size,
        )

    AutoencoderKL.from_pretrained = classmethod(tiny_vae)
    import types

    class _Any(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return lambda *x, **k: None

    sys.modules.setdefault("wandb", _Any("wandb"))
    small_loader()
    image_folder("fake_images", n=a.n, size=a.image_size, classes=a.classes)
    subs = [
        ('assert torch.cuda.is_available(), "Training currently requires at least one GPU."', "pass"),
        ("device = rank % torch.cuda.device_count()", 'device = "cpu"'),
        *[tuple(s.split("=>", 1)) for s in a.sub],
    ]
    run_script(a.script, subs, args)


if __name__ == "__main__":
    main()
