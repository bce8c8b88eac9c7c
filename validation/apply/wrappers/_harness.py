"""Shared helpers of the apply-validation wrappers (ours, not third-party code).

A wrapper runs a public trainer *unchanged* (the baseline copy or the copy `t2s-opt apply`
patched: the wrapper runs in the current folder, which is the copy), with only what a CPU box
without downloads needs substituted:

* datasets: torchvision's CIFAR10/MNIST/CelebA/ImageFolder/... become ``FakeData`` of the same
  image shape (the trainer's own transform still runs), or a folder of random PNGs is written;
* ``DataLoader``: ``num_workers=0`` and a small ``batch_size``;
* hard-coded constants (model width, epochs, device): ``run_script`` applies literal text
  substitutions to the source before executing it as ``__main__`` (each must match, or the
  wrapper fails loudly, so a patched file that moved a constant is noticed).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
import torchvision

HERE = Path(__file__).resolve().parent


def seed(n: int = 0) -> None:
    random.seed(n)
    np.random.seed(n)
    torch.manual_seed(n)


def cwd_on_path(*extra: str) -> None:
    """The trainer copy (cwd) first on sys.path, so its local modules are the ones imported."""
    for p in reversed([os.getcwd(), *[os.path.abspath(e) for e in extra]]):
        if p not in sys.path:
            sys.path.insert(0, p)


def fake_datasets(n: int = 32, size: int = 32, channels: int = 3, classes: int = 10, skip: tuple = ()) -> None:
    """Replace the torchvision datasets trainers download with FakeData of the given shape."""
    mode_size = (channels, size, size)

    def make(name):
        def factory(*args, transform=None, target_transform=None, **kwargs):
            print(f"[wrapper] {name} -> FakeData(size={n}, image_size={mode_size})", file=sys.stderr)
            ds = torchvision.datasets.FakeData(
                size=n,
                image_size=mode_size,
                num_classes=classes,
                transform=transform,
                target_transform=target_transform,
                random_offset=0,
            )
            ds.classes = [str(i) for i in range(classes)]
            return ds

        return factory

    for name in ("CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "CelebA", "LSUN", "ImageFolder", "STL10"):
        if name in skip:
            continue
        setattr(torchvision.datasets, name, make(name))


def small_loader(batch_size: int | None = None, num_workers: int = 0) -> None:
    """DataLoader with num_workers=0 (2 shared cores) and, if given, a smaller batch."""
    orig = torch.utils.data.DataLoader
    if getattr(orig, "_t2s_wrapped", False):
        return

    class DataLoader(orig):  # type: ignore[misc, valid-type]
        _t2s_wrapped = True

        def __init__(self, dataset, *args, **kwargs):
            if args:  # positional batch_size, shuffle, ...
                names = ["batch_size", "shuffle", "sampler", "batch_sampler", "num_workers"]
                kwargs.update(dict(zip(names, args)))
                args = ()
            kwargs["num_workers"] = num_workers
            kwargs.pop("persistent_workers", None)
            kwargs.pop("prefetch_factor", None)
            kwargs["pin_memory"] = False
            if batch_size is not None and kwargs.get("batch_sampler") is None:
                kwargs["batch_size"] = min(batch_size, kwargs.get("batch_size") or batch_size)
            super().__init__(dataset, **kwargs)

    torch.utils.data.DataLoader = DataLoader
    torch.utils.data.dataloader.DataLoader = DataLoader


def image_folder(
    root: str | Path, n: int = 32, size: int = 32, classes: int = 1, ext: str = "png", channels: int = 3
) -> Path:
    """A folder of random images (``root/<class>/<i>.png``), deterministic."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class{i % classes}" if classes > 1 else root / "class0"
        d.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
        # smooth blobs so a denoiser has something to learn
        arr = (arr.astype(np.float32) * 0.3 + 180 * (np.indices((size, size)).sum(0) % 16 < 8)[..., None]).clip(0, 255)
        img = Image.fromarray(arr.astype(np.uint8).squeeze() if channels == 1 else arr.astype(np.uint8))
        img.save(d / f"{i:05d}.{ext}")
    return root


def substitute(source: str, subs: list[tuple[str, str]], where: str = "") -> str:
    for old, new in subs:
        if old not in source:
            raise SystemExit(f"[wrapper] substitution target not found in {where}: {old!r}")
        source = source.replace(old, new)
    return source


def run_script(path: str | Path, subs: list[tuple[str, str]] = (), argv: list[str] | None = None) -> dict:
    """Execute ``path`` (relative to cwd) as ``__main__`` after literal substitutions."""
    path = Path(path).resolve()
    source = substitute(path.read_text(), list(subs), str(path))
    sys.argv = [str(path), *(argv or [])]
    cwd_on_path(str(path.parent))
    g = {"__name__": "__main__", "__file__": str(path), "__builtins__": __builtins__}
    exec(compile(source, str(path), "exec"), g)
    return g


def load_module(name: str, path: str | Path, subs: list[tuple[str, str]] = ()):
    """Import ``path`` as module ``name`` after literal substitutions (registered in sys.modules)."""
    import types

    path = Path(path).resolve()
    source = substitute(path.read_text(), list(subs), str(path))
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    sys.modules[name] = mod
    exec(compile(source, str(path), "exec"), mod.__dict__)
    return mod
