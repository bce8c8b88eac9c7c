"""``python -m optimizer_tool.smoke.unpickle SRC DST``: unpickle a checkpoint that ``torch.load(weights_only=True)``
refuses, in a process of its own, and write back only what the checks read.

Full unpickling runs whatever code the file names (``__reduce__``), so t2s-opt never does it in its
own process: :func:`optimizer_tool.smoke.checkpoint.load_checkpoint` starts this module like the run
that wrote the file (its folder as cwd, its PYTHONPATH, so the trainer's classes import), in a
session of its own, killed with its whole process tree at the deadline. Here the checkpoint is
loaded with ``weights_only=False`` and saved again to DST as plain containers: dicts with string
keys, lists, tensors, numbers, strings; a module becomes its ``state_dict()``, any other object the
string ``<module.Class>``. t2s-opt reads DST with ``weights_only=True``: whatever this process did,
what comes back cannot run code there.

Exit status: 0 DST written; 3 the checkpoint does not load (the reason on stderr); 2 usage.
"""

from __future__ import annotations

import sys
from typing import Any, List, Optional

LOAD_FAILED = 3
MAX_DEPTH = 12
_SCALARS = (bool, int, float, str, type(None))


def plain(obj: Any, depth: int = 0) -> Any:
    """``obj`` as containers and tensors that ``torch.load(weights_only=True)`` accepts."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        return tensor if type(tensor) in (torch.Tensor, torch.nn.Parameter) else tensor.as_subclass(torch.Tensor)
    if type(obj) in _SCALARS:
        return obj
    if depth >= MAX_DEPTH:
        return f"<{type(obj).__module__}.{type(obj).__name__}>"
    if isinstance(obj, dict):
        return {str(k): plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, depth + 1) for v in obj]
    if isinstance(obj, torch.nn.Module):
        return plain(obj.state_dict(), depth + 1)
    return f"<{type(obj).__module__}.{type(obj).__name__}>"


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m optimizer_tool.smoke.unpickle SRC DST", file=sys.stderr)
        return 2
    src, dst = args
    import torch

    try:
        obj = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:
        print(f"torch.load failed: {type(exc).__name__}: {exc}".splitlines()[0][:300], file=sys.stderr)
        return LOAD_FAILED
    torch.save(plain(obj), dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
