"""`t2s-opt apply` against `t2s-opt check` on one very large trainer file, side by side in the same
invocation (issue 14, item 10: apply within 2x of check's time on the same file).

    python benchmarks/bench_apply_large_file.py [--lines 50000] [--repeat 1]

The file is a small training loop (no EMA, no clipping, no schedule, no monitoring: four safe fixes
to place) followed by generated helper functions up to ``--lines`` lines. Each command runs as a
subprocess on its own copy of the file, interleaved (check, apply, next repeat):

  check   python -m optimizer_tool.cli check --no-config --output-format concise FILE
  apply   python -m optimizer_tool.cli apply --no-config FILE      (writes the fixes in place)

Wall seconds and the child's peak resident memory (``os.wait4``) are printed per run, then the
ratio apply/check of the medians. The machine is shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_check_repos import measured  # noqa: E402

TRAINER = """\
import torch
from torch.utils.data import DataLoader

model = torch.nn.Linear(2, 2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
loader = DataLoader(torch.randn(64, 2), batch_size=8)
num_epochs = 10
writer = open("metrics.txt", "w")
for epoch in range(num_epochs):
    for x in loader:
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "checkpoint.pt")
"""
HELPER = "\n\ndef helper_{i}(x, y=2):\n    z = x * y + {i}\n    if z > 10:\n        return z - 1\n    return z\n"


def trainer_text(lines: int) -> str:
    count = max(0, (lines - TRAINER.count("\n")) // HELPER.count("\n"))
    return TRAINER + "".join(HELPER.format(i=i) for i in range(count))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=50_000, help="length of the generated trainer")
    parser.add_argument("--repeat", type=int, default=1, help="runs per command")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = parser.parse_args()
    text = trainer_text(args.lines)
    print(f"trainer: {text.count(chr(10))} lines; load average {os.getloadavg()[0]:.2f}")
    times: dict[str, list[float]] = {"check": [], "apply": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):
            for name in ("check", "apply"):
                folder = Path(tmp) / f"{name}{run}"
                folder.mkdir()
                (folder / "train.py").write_text(text)
                cmd = [sys.executable, "-m", "optimizer_tool.cli", name, "--no-config"]
                cmd += ["--output-format", "concise"] if name == "check" else []
                wall, rss, status = measured([*cmd, "train.py"], folder, args.timeout)
                changed = (folder / "train.py").read_text() != text
                print(f"{name:<6} run {run + 1}: {wall:7.1f} s  {rss:7.0f} MB  exit {status}  file changed: {changed}")
                times[name].append(wall)
    check, apply = statistics.median(times["check"]), statistics.median(times["apply"])
    print(f"median: check {check:.1f} s, apply {apply:.1f} s; apply/check = {apply / check:.2f}x (target <= 2x)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
