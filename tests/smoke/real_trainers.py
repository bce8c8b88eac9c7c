"""Tiny trainers in the styles the smoke test must read right, written into tmp_path by the tests.

ACCELERATE_TRAINER: accelerate on CPU, diffusers-style checkpoint folders (``checkpoint-N/`` by
``accelerator.save_state``, the EMA beside it as ``unet_ema/diffusion_pytorch_model.safetensors``,
older folders deleted as ``checkpoints_total_limit`` does), resumed from a folder, sample PNGs, and
every gradient-norm clipping path in turn (one per step)."""

from __future__ import annotations

import textwrap
from pathlib import Path

ACCELERATE_TRAINER = textwrap.dedent("""
    import argparse, os, shutil
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from accelerate import Accelerator
    from torch.nn.utils import clip_grad_norm_ as bound_clip_grad_norm_  # bound before any step
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    p = argparse.ArgumentParser()
    p.add_argument("--out"); p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--resume", default=None); p.add_argument("--no-ema-restore", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    acc = Accelerator(cpu=True)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.1 * s))
    x = torch.randn(64, 8)
    data = torch.utils.data.TensorDataset(x, 0.25 * x.sum(1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)

    def clip(step):
        params = list(model.parameters())
        kind = step % 4
        if kind == 0:
            acc.clip_grad_norm_(params, 0.5)
        elif kind == 1:  # torch >= 2.6 split
            total = torch.nn.utils.get_total_norm([q.grad for q in params])
            torch.nn.utils.clip_grads_with_norm_(params, 0.5, total)
        elif kind == 2:
            bound_clip_grad_norm_(params, 0.5)
        else:
            torch.nn.utils.clip_grad.clip_grad_norm_(params, 0.5)

    step = 0
    if args.resume:
        acc.load_state(args.resume)
        if not args.no_ema_restore:
            ema.load_state_dict(load_file(os.path.join(args.resume, "unet_ema", "diffusion_pytorch_model.safetensors")))
        step = int(args.resume.rstrip("/").rsplit("_", 1)[-1].rsplit("-", 1)[-1])
    os.makedirs(args.out, exist_ok=True)
    for epoch in range(step // len(loader), args.epochs):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            acc.backward(loss)
            clip(step)
            opt.step(); sched.step(); opt.zero_grad()
            ema.update_parameters(model)
            step += 1
        for old in [d for d in os.listdir(args.out) if d.startswith("checkpoint-")]:
            shutil.rmtree(os.path.join(args.out, old))  # checkpoints_total_limit=1
        folder = os.path.join(args.out, f"checkpoint-{step}")
        acc.save_state(folder)
        os.makedirs(os.path.join(folder, "unet_ema"))
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()},
                  os.path.join(folder, "unet_ema", "diffusion_pytorch_model.safetensors"))
        pixels = (np.random.rand(16, 16, 3) * 255).astype(np.uint8)
        os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
        Image.fromarray(pixels).save(os.path.join(args.out, "samples", f"step_{step}.png"))
""")


def write_trainer(tmp_path: Path, source: str, name: str = "train.py") -> Path:
    """The trainer's folder (the smoke test's PATH)."""
    folder = tmp_path / "trainer"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(source, encoding="utf-8")
    return folder


# A plain loop far longer than a smoke test; its finally block leaves a marker (--max-steps must let it run).
LONG_TRAINER = textwrap.dedent("""
    import os, sys, torch
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    try:
        for step in range(100000):
            try:
                loss = model(torch.randn(8, 4)).pow(2).mean()
                loss.backward()
                opt.step()
                opt.zero_grad()
            except Exception:
                pass  # a trainer that swallows errors must still be stopped
    finally:
        open(os.path.join(out, "finally_ran"), "w").write("yes")
""")

# Lightning with gradient_clip_val: clipping inside the precision plugin.
LIGHTNING_TRAINER = textwrap.dedent("""
    import sys, torch, lightning as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(8, 1)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(64, 8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    trainer = L.Trainer(max_steps=6, accelerator="cpu", gradient_clip_val=0.25, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=sys.argv[1])
    trainer.fit(Tiny(), loader)
""")

# No torch: starts in a fraction of a second and sleeps, for the --timeout budgets.
SLEEPER = textwrap.dedent("""
    import sys, time
    time.sleep(float(sys.argv[1]))
""")
