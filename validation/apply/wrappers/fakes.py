"""Generic wrapper: run a trainer script unchanged on fake data, on CPU.

python fakes.py [--size 32] [--channels 3] [--n 64] [--classes 10] [--batch B] [--stub MODULE ...]
                [--sub 'OLD=>NEW' ...] [--cuda-identity] [--image-folder DIR] [--seed 0] SCRIPT [-- ARGS...]

* torchvision CIFAR10/MNIST/CelebA/ImageFolder/... -> FakeData(n, channels x size x size);
* DataLoader: num_workers=0 and batch <= B;
* --stub MODULE: an empty stand-in module for an import that only logs (wandb) or is not
  installable here (mpi4py: a one-process COMM_WORLD);
* --cuda-identity: .cuda() on tensors and modules returns them unchanged (code that calls it
  unconditionally);
* --sub: literal text substitutions in SCRIPT before it runs (each must match);
* --image-folder DIR: write n random PNGs (size x size) under DIR first (trainers that read a folder).
SCRIPT runs as __main__ with cwd = the trainer copy and the copy first on sys.path.
"""

import argparse
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import fake_datasets, image_folder, run_script, seed, small_loader  # noqa: E402


class _Anything(types.ModuleType):
    """Attribute access returns a callable that accepts anything and returns itself."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Call()


class _Call:
    def __call__(self, *a, **k):
        return self

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def stub_mpi():
    class Comm:
        rank = 0
        size = 1

        def Get_rank(self):
            return 0

        def Get_size(self):
            return 1

        def bcast(self, obj, root=0):
            return obj

        def allreduce(self, obj, op=None):
            return obj

        def Barrier(self):
            pass

        barrier = Barrier

    mpi = types.ModuleType("mpi4py.MPI")
    mpi.COMM_WORLD = Comm()
    mpi.SUM = "sum"
    pkg = types.ModuleType("mpi4py")
    pkg.MPI = mpi
    sys.modules["mpi4py"] = pkg
    sys.modules["mpi4py.MPI"] = mpi


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--stub", action="append", default=[])
    ap.add_argument("--sub", action="append", default=[])
    ap.add_argument("--cuda-identity", action="store_true", help="Tensor.cuda()/Module.cuda() return self")
    ap.add_argument("--image-folder")
    ap.add_argument("--image-classes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE set before the script runs")
    ap.add_argument("script")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    seed(a.seed)
    for kv in a.env:
        k, v = kv.split("=", 1)
        os.environ[k] = v
    for name in a.stub:
        if name == "mpi4py":
            stub_mpi()
        else:
            sys.modules[name] = _Anything(name)
    if a.cuda_identity:
        import torch

        torch.nn.Module.cuda = lambda self, *x, **k: self
        torch.Tensor.cuda = lambda self, *x, **k: self
    fake_datasets(
        n=a.n, size=a.size, channels=a.channels, classes=a.classes, skip=("ImageFolder",) if a.image_folder else ()
    )
    small_loader(batch_size=a.batch)
    if a.image_folder:
        image_folder(a.image_folder, n=a.n, size=a.size, classes=a.image_classes, channels=a.channels)
    subs = [tuple(s.split("=>", 1)) for s in a.sub]
    run_script(a.script, subs, args)


if __name__ == "__main__":
    main()
