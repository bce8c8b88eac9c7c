"""Shapes of public trainers from the third held-out set (validation/heldout3) that ``check`` got
wrong at first sight: the config file a training entry reads (its ``--config`` default, or none: the
run names it) and what that leaves to the run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.testing import write_example


def verdicts(tmp_path: Path, files: dict[str, str], entry: str = "train.py") -> dict[str, dict]:
    write_example(files, tmp_path)
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(tmp_path / entry)])
    (unit,) = json.loads(result.stdout)["units"]
    return unit["verdicts"]


# --- the config file the entry reads (validation/heldout3: Moore-AnimateAnyone, LatentSync, ResShift,
# DynamiCrafter, ddae; validation/heldout2: LightningDiT) -----------------------------------------
CONFIGURED = """\
import argparse

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from omegaconf import OmegaConf

parser = argparse.ArgumentParser()
parser.add_argument("--config", type=str{default})
args = parser.parse_args()
cfg = OmegaConf.load(args.config)


def main():
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    scheduler = DDPMScheduler(beta_schedule=cfg.diffusion.beta_schedule)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in loader:
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (x.shape[0],))
        loss = F.mse_loss(model(scheduler.add_noise(x, noise, t)), noise)
        optimizer.zero_grad()
        loss.backward()
{clip}
        optimizer.step()


if __name__ == "__main__":
    main()
"""
NO_CLIP = "        pass"


def _yaml(schedule: str) -> str:
    return f"diffusion:\n  beta_schedule: {schedule}\noptimizer:\n  lr: 0.0001\n"


def test_the_default_config_file_decides_not_every_config_beside_it(tmp_path):
    files = {
        "train.py": CONFIGURED.format(default=', default="configs/train.yaml"', clip=NO_CLIP),
        "configs/train.yaml": _yaml("linear"),
        "configs/finetune.yaml": _yaml("squaredcos_cap_v2"),
    }
    cosine = verdicts(tmp_path, files)["cosine"]
    assert cosine["state"] == "off-by-default"
    assert "train.yaml" in cosine["reason"] and "finetune" not in cosine["reason"]


def test_a_config_named_on_the_command_line_decides_what_it_sets(tmp_path):
    files = {
        "train.py": CONFIGURED.format(default="", clip=NO_CLIP),
        "configs/cifar.yaml": _yaml("linear"),
        "configs/celeba.yaml": _yaml("linear"),
    }
    cosine = verdicts(tmp_path, files)["cosine"]
    assert cosine["state"] == "decided-elsewhere"
    assert "--config has no default" in cosine["reason"] and "'linear'" in cosine["reason"]


def test_a_default_config_missing_from_the_repository_leaves_the_choice_to_the_run(tmp_path):
    files = {
        "train.py": CONFIGURED.format(default=', default="configs/train/stage1.yaml"', clip=NO_CLIP),
        "configs/train/stage1_256.yaml": _yaml("linear"),
        "configs/inference/sample.yaml": _yaml("squaredcos_cap_v2"),  # a sampling job's config: not read
    }
    cosine = verdicts(tmp_path, files)["cosine"]
    assert cosine["state"] == "decided-elsewhere"
    assert "not in the repository" in cosine["reason"] and "squaredcos" not in cosine["reason"]


def test_a_key_tested_in_the_config_the_run_names_is_decided_there(tmp_path):
    clip = (
        "        if 'max_grad_norm' in cfg['optimizer']:\n"
        "            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg['optimizer']['max_grad_norm'])"
    )
    files = {"train.py": CONFIGURED.format(default="", clip=clip), "configs/a.yaml": _yaml("linear")}
    clipping = verdicts(tmp_path, files)["clipping"]
    assert clipping["state"] == "decided-elsewhere" and "max_grad_norm" in clipping["reason"]


def test_clipping_in_both_branches_of_a_config_switch_runs_either_way(tmp_path):
    clip = (
        "        if cfg.run.mixed_precision:\n"
        "            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "        else:\n"
        "            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"
    )
    files = {
        "train.py": CONFIGURED.format(default="", clip=clip),
        "configs/a.yaml": _yaml("linear") + "run:\n  mixed_precision: true\n",
        "configs/b.yaml": _yaml("linear") + "run:\n  mixed_precision: false\n",
    }
    assert verdicts(tmp_path, files)["clipping"]["state"] == "present"
