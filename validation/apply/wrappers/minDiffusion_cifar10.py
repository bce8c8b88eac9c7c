"""cloneofsimo/minDiffusion train_cifar10.py: no CLI. CIFAR10 -> FakeData(64, 3x32x32), batch 16,
NaiveUnet n_feat 128 -> 16, n_T 1000 -> 20 (the per-epoch sample), device cuda:1 -> cpu.
Usage: python minDiffusion_cifar10.py OUT EPOCHS"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import cwd_on_path, fake_datasets, seed, small_loader  # noqa: E402

epochs = int(sys.argv[2])
seed()
fake_datasets(n=64, size=32, channels=3)
small_loader(batch_size=16)
cwd_on_path()
import train_cifar10 as t  # noqa: E402

_unet, _ddpm = t.NaiveUnet, t.DDPM
t.NaiveUnet = lambda *a, **k: _unet(*a, **{**k, "n_feat": 16})
t.DDPM = lambda *a, **k: _ddpm(*a, **{**k, "n_T": 20})
os.makedirs("contents", exist_ok=True)
t.train_cifar10(n_epoch=epochs, device="cpu")
