"""``t2s-opt apply scripts/train.py``: the training loop lives in the repository's package beside
``scripts/`` (openai's improved-diffusion: ``scripts/image_train.py`` -> ``improved_diffusion/
train_util.py``). check reaches it from the repository root; apply refused to change it ("outside
.../scripts; pass the folder") and ``--out`` copied only ``scripts/``, leaving a copy that could
not import its own package."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from optimizer_tool.cli import app

TRAIN_UTIL = """\
import torch


class TrainLoop:
    def __init__(self, model, lr=1e-3):
        self.model = model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)

    def run_loop(self, steps=3):
        for _ in range(steps):
            loss = self.model(torch.randn(4, 2)).pow(2).mean()
            loss.backward()
            self.opt.step()
            self.opt.zero_grad()
"""

SCRIPT = """\
import torch

from mypkg.train_util import TrainLoop


def main():
    TrainLoop(torch.nn.Linear(2, 2)).run_loop()


if __name__ == "__main__":
    main()
"""


def _repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "mypkg").mkdir(parents=True)
    (repo / "scripts").mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "mypkg"\nversion = "0"\n')
    (repo / "mypkg" / "__init__.py").write_text("")
    (repo / "mypkg" / "train_util.py").write_text(TRAIN_UTIL)
    (repo / "scripts" / "train.py").write_text(SCRIPT)
    return repo


def test_apply_on_an_entry_script_patches_the_package_it_trains_with(tmp_path):
    repo = _repo(tmp_path)
    out = tmp_path / "patched"
    result = CliRunner().invoke(
        app, ["apply", "--select", "CLIP001", "--out", str(out), str(repo / "scripts/train.py")]
    )
    assert result.exit_code == 0, result.output
    patched = (out / "mypkg" / "train_util.py").read_text()
    assert "clip_grad_norm_" in patched
    assert (out / "scripts" / "train.py").read_text() == SCRIPT
    # the copy runs on its own: its script imports the copied package
    done = subprocess.run(
        [sys.executable, "scripts/train.py"],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(out), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert (repo / "mypkg" / "train_util.py").read_text() == TRAIN_UTIL  # --out leaves the project as it was


def test_in_place_apply_on_an_entry_script_changes_the_package_file(tmp_path):
    repo = _repo(tmp_path)
    result = CliRunner().invoke(app, ["apply", "--select", "CLIP001", "--force", str(repo / "scripts/train.py")])
    assert result.exit_code == 0, result.output
    assert "clip_grad_norm_" in (repo / "mypkg" / "train_util.py").read_text()


def test_a_trainer_folder_inside_a_larger_repository_stays_its_own_project(tmp_path):
    """A trainer checked out (or materialised) inside another repository: its project is its own
    folder when everything it trains with is there, so ``--out`` beside it is accepted (the
    repository root above made the copy 'inside the project it copies')."""
    outer = tmp_path / "outer"
    (outer / "work" / "trainer").mkdir(parents=True)
    (outer / "pyproject.toml").write_text('[project]\nname = "outer"\nversion = "0"\n')
    (outer / "work" / "trainer" / "train_util.py").write_text(TRAIN_UTIL)
    (outer / "work" / "trainer" / "train.py").write_text(SCRIPT.replace("from mypkg.train_util", "from train_util"))
    out = outer / "work" / "patched"
    result = CliRunner().invoke(
        app, ["apply", "--select", "CLIP001", "--out", str(out), str(outer / "work" / "trainer" / "train.py")]
    )
    assert result.exit_code == 0, result.output
    assert "clip_grad_norm_" in (out / "train_util.py").read_text()
