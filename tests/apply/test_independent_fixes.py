"""Independent fixes, ruff-style: each fix is written when it can be placed and verified, the others
are held back with their reason; ``--select`` picks fixes by code; info findings are fixed only
when asked for; an EMA initialisation (``decay=0``) is never taken for an update.

Condensed from what default ``apply`` did on public trainers (DiT-style scripts, minimal loops):
one fix that could not place its change (monitoring without a metrics sink, an LR schedule without
a run length) blocked every correct fix; a DiT-style ``update_ema(ema, model, decay=0)`` before the
loop was moved after ``opt.step()``, making the EMA a copy of the live weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from optimizer_tool.cli import app

# A DiT-style script: the EMA is initialised with decay=0 and then never updated in the loop. It logs
# with print only (no metrics sink: the curves go on a printed line) and runs 20 steps.
EMA_COPY = """\
import copy
from collections import OrderedDict

import torch


@torch.no_grad()
def update_ema(ema_model, model, decay=0.9999):
    ema_params = OrderedDict(ema_model.named_parameters())
    for name, param in model.named_parameters():
        ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)


def main():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    update_ema(ema, model, decay=0)
    ema.eval()
    for step in range(20):
        x = torch.randn(8, 4)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(step, loss.item())
    torch.save({"model": model.state_dict(), "ema": ema.state_dict()}, "ckpt.pt")


if __name__ == "__main__":
    main()
"""


# Warm-up then a cosine decay that reaches exactly 0 (LR003, info).
LAMBDA_TO_ZERO = """\
import math

import torch


def train(epochs=10, warmup=5):
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = [torch.randn(8, 4) for _ in range(5)]
    total = epochs * len(loader)

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    for epoch in range(epochs):
        for x in loader:
            loss = (model(x) - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


if __name__ == "__main__":
    train()
"""


def run(*args: str):
    return CliRunner().invoke(app, ["apply", "--no-config", *args])


def check_codes(path: Path) -> set[str]:
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "concise", str(path)])
    return {token for line in result.stdout.splitlines() for token in line.split()[1:2]}


def trainer(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(EMA_COPY)
    return tmp_path / "train.py"


def test_an_ema_initialised_with_decay_0_and_never_updated_is_a_bug(tmp_path):
    assert "EMA002" in check_codes(trainer(tmp_path))


def test_default_apply_writes_what_it_can_and_holds_back_the_rest(tmp_path):
    path = trainer(tmp_path)
    result = run(str(path))
    assert result.exit_code == 1  # written, with fixes held back
    assert "fixed EMA002" in result.stdout and "fixed CLIP001" in result.stdout
    assert "wrote 1 file(s)" in result.stdout
    assert "fixed MON001" in result.stdout  # printed on a line of its own: the trainer only prints
    # The loop's range(20) is the run length now; a 20-step schedule makes the EMA's 0.9999 horizon a
    # bug the EMA fix cannot lower: the schedule is held back, and only the schedule (not the EMA's
    # own update, nor clipping) — the fix that made the finding appear, found by planning each alone.
    assert "not applied: the lr-schedule fix would introduce a new bug" in result.stderr, result.stderr
    assert "not applied: the ema fix" not in result.stderr
    patched = path.read_text()
    assert "update_ema(ema, model, decay=0)" in patched  # the initialisation stays where it was
    assert "clip_grad_norm_" in patched
    assert not check_codes(path) & {"EMA002", "EMA003", "CLIP001"}
    # the patched trainer runs, and its EMA really averages: behind the live weights, not a copy
    # of them (decay 0 moved after the step) nor of the initial ones (never updated)
    subprocess.run([sys.executable, str(path)], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    probe = (
        "import torch, copy\n"
        "torch.manual_seed(0)\n"
        "init = torch.nn.Linear(4, 4).state_dict()\n"
        "ckpt = torch.load('ckpt.pt')\n"
        "live, ema = ckpt['model']['weight'], ckpt['ema']['weight']\n"
        "print(float((ema - live).abs().max()), float((ema - init['weight']).abs().max()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120
    )
    from_live, from_init = map(float, out.stdout.split())
    assert from_live > 1e-4 and from_init > 1e-6


def test_diff_lists_what_would_be_held_back(tmp_path):
    path = trainer(tmp_path)
    result = run("--diff", str(path))
    added = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert result.exit_code == 1 and any("torch.nn.utils.clip_grad_norm_" in line for line in added)
    assert "not applied: the lr-schedule fix would introduce a new bug" in result.stderr
    assert path.read_text() == EMA_COPY


def test_select_picks_fixes_by_code(tmp_path):
    path = trainer(tmp_path)
    result = run("--select", "CLIP001", str(path))
    assert result.exit_code == 0, result.output
    patched = path.read_text()
    assert "clip_grad_norm_" in patched
    assert "lerp_" not in patched and "update_ema(ema, model)" not in patched  # EMA002 was not selected
    bad = run("--select", "NOPE9", str(path))
    assert bad.exit_code == 2 and "matches no fixable rule" in bad.stderr


def test_info_findings_are_fixed_only_when_asked(tmp_path):
    """LR003 (the decay reaches exactly 0) is advice: default apply leaves it, --select fixes it."""
    (tmp_path / "train.py").write_text(LAMBDA_TO_ZERO)
    path = tmp_path / "train.py"
    assert "LR003" in check_codes(path)
    before = path.read_text()
    run("--skip", "ema,clipping,monitoring", str(path))
    assert path.read_text() == before
    assert run("--select", "LR003", str(path)).exit_code == 0
    assert "min_lr_ratio" in path.read_text()
    assert "LR003" not in check_codes(path)


def test_a_safe_fix_that_changes_a_cli_default_is_held_back_unless_named(tmp_path):
    """The diffusers example's fix raises `--lr_warmup_steps` and moves `--lr_scheduler` from
    "constant" to "cosine_with_min_lr": every run (and every script) relying on those defaults
    changes, so the default safe set does not do it (the diff is the manual patch); naming the
    optimization does."""
    from casefiles import case, write_tree

    folder = write_tree(case("lr-schedule/diffusers_text_to_image").inputs, tmp_path / "project")
    train = next(p for p in folder.rglob("*.py") if "--lr_scheduler" in p.read_text())
    before = train.read_text()
    result = run("--skip", "ema,clipping,monitoring", str(folder))
    assert "the fix changes the default of --lr_warmup_steps from 500 to 2000" in result.stderr
    assert "review it and apply with --only" in result.stderr
    assert train.read_text() == before
    named = run("--only", "lr-schedule", str(folder))
    assert named.exit_code in (0, 1), named.output
    assert 'default="cosine_with_min_lr"' in train.read_text()


def test_checks_fixable_count_leaves_out_info_findings_apply_does_not_fix_unasked(tmp_path):
    import json
    import re

    (tmp_path / "train.py").write_text(LAMBDA_TO_ZERO)
    concise = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "concise", str(tmp_path)])
    document = json.loads(
        CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(tmp_path)]).output
    )
    info = [f for f in document["findings"] if f["severity"] == "info" and f["fixable"]]
    assert [f["code"] for f in info] == ["LR003"]
    stated = re.search(r"(\d+) fixable with `t2s-opt apply`", concise.stdout)
    wanted = len([f for f in document["findings"] if f["fixable"] and f["severity"] != "info"])
    assert (int(stated.group(1)) if stated else 0) == wanted


LINES_MOVE = """\
import torch

model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
num_epochs = 2
loader = torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=4)
for epoch in range(num_epochs):
    for x in loader:
        loss = (model(x) - x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"loss {loss.item():.4f}")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")
"""


def test_reported_lines_are_the_lines_of_the_file_on_disk(tmp_path):
    """Fixes run one after another, each on the code the ones before left; what apply reports (fixed
    findings, refusals) must name the user's lines, not the partly patched file's."""
    path = tmp_path / "train.py"
    path.write_text(LINES_MOVE)
    step_line = LINES_MOVE.splitlines().index("        optimizer.step()") + 1
    result = run("--diff", str(path))
    fixed = {line.split()[1]: line.rsplit(":", 1)[-1] for line in result.output.splitlines() if "  fixed " in line}
    assert "EMA001" in fixed and "CLIP001" in fixed, result.output  # the EMA's lines come first
    assert fixed["CLIP001"] == str(step_line)
