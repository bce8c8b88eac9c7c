"""Shapes of public trainers from the third held-out set (validation/heldout3) that ``check`` got
wrong at first sight: the config file a training entry reads (its ``--config`` default, or none: the
run names it) and what that leaves to the run."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.testing import unit_verdicts as verdicts
from optimizer_tool.testing import write_example

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


# --- objectives the third held-out set showed (RectifiedFlow, DiffGesture, priorMDM, LatentSync) ---------
RECTIFIED_FLOW = """\
import torch


class RectifiedFlow:
    def __init__(self, beta_min=0.1, beta_max=20.0, N=1000):
        # score_sde's VP-SDE betas, kept beside the straight path
        self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N)

    def get_z0(self, batch):
        return torch.randn(batch.shape) * 1.0


def loss_fn(model, sde, batch):
    z0 = sde.get_z0(batch).to(batch.device)
    t = torch.rand(batch.shape[0], device=batch.device)
    t_expand = t.view(-1, 1, 1, 1)
    perturbed_data = t_expand * batch + (1.0 - t_expand) * z0
    target = batch - z0
    score = model(perturbed_data, t * 999)
    return torch.square(score - target).mean()


def main():
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    sde = RectifiedFlow()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    for batch in loader:
        loss = loss_fn(model, sde, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
"""


def test_a_straight_path_to_noise_a_helper_draws_is_a_flow_whatever_betas_lie_beside_it(tmp_path):
    states = verdicts(tmp_path, {"train.py": RECTIFIED_FLOW})
    assert states["vpred"]["state"] == "present" and states["zero-snr"]["state"] == "present"
    assert states["cosine"]["state"] == "n/a"


STEP_FUNCTION = """\
import torch
from torch.nn.utils import clip_grad_norm_


def train_iter_diffusion(args, in_audio, target_poses, pose_diffusion, optimizer):
    optimizer.zero_grad()
    loss = pose_diffusion.get_loss(target_poses, in_audio)
    loss.backward()
    clip_grad_norm_(pose_diffusion.parameters(), 10)
    optimizer.step()
    return {"loss": loss.item()}
"""


def test_the_loss_of_an_object_a_step_function_receives_is_decided_by_its_caller(tmp_path):
    states = verdicts(tmp_path, {"train_diffusion.py": STEP_FUNCTION}, entry="train_diffusion.py")
    assert states["vpred"]["state"] == "decided-elsewhere" and "pose_diffusion" in states["vpred"]["reason"]
    assert states["clipping"]["state"] == "present"


MOTION = """\
import torch
import torch.nn.functional as F


class MotionDenoiser(torch.nn.Module):
    def __init__(self, njoints=263, nfeats=1):
        super().__init__()
        self.net = torch.nn.Linear(njoints * nfeats, njoints * nfeats)

    def forward(self, x, t):
        return self.net(x)


def main():
    model = MotionDenoiser()
    betas = torch.linspace(1e-4, 0.02, 1000)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for motion in loader:
        noise = torch.randn_like(motion)
        t = torch.randint(0, 1000, (motion.shape[0],))
        a = alphas_cumprod[t].view(-1, 1)
        loss = F.mse_loss(model(a.sqrt() * motion + (1 - a).sqrt() * noise, t), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
"""


def test_pose_and_motion_sequences_have_no_image_resolution(tmp_path):
    resolution = verdicts(tmp_path, {"train.py": MOTION})["resolution"]
    assert resolution["state"] == "n/a" and "pose or motion sequences" in resolution["reason"]


SYNCNET = """\
import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.optimization import get_scheduler
from diffusers.utils import logging

logger = logging.get_logger(__name__)


def main():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), FeedForward(8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = get_scheduler("constant", optimizer=optimizer)
    for frames, audio, y in loader:
        loss = F.binary_cross_entropy_with_logits(F.cosine_similarity(model(frames), audio), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


if __name__ == "__main__":
    main()
"""


def test_a_diffusers_utility_or_building_block_is_no_diffusion_objective(tmp_path):
    states = verdicts(tmp_path, {"train.py": SYNCNET})
    assert states["cosine"]["state"] == "n/a" and states["vpred"]["state"] == "n/a"


RANK_GUARDED_EMA = """\
import argparse

import torch
import torch.nn.functional as F
from ema_pytorch import EMA

parser = argparse.ArgumentParser()
parser.add_argument("--local_rank", type=int, default=-1)
opt = parser.parse_args()


def main(local_rank):
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if local_rank == 0:
        ema = EMA(model, beta=0.9999)
    for x in loader:
        noise = torch.randn_like(x)
        loss = F.mse_loss(model(x + noise), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if local_rank == 0:
            ema.update()


if __name__ == "__main__":
    main(opt.local_rank)
"""


def test_an_ema_kept_by_the_main_process_is_no_switch_left_off(tmp_path):
    assert verdicts(tmp_path, {"train.py": RANK_GUARDED_EMA})["ema"]["state"] == "present"


# --- learning-rate shapes written by hand (ddae, mattroz/diffusion-ddpm, MDT's TrainLoop) --------------
HAND_LR = """\
import torch
import torch.nn.functional as F


def main(opt, lr=1e-4):
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    for ep in range(opt.n_epoch):
{set_lr}
        for x in loader:
            noise = torch.randn_like(x)
            loss = F.mse_loss(model(x + noise), noise)
            optim.zero_grad()
            loss.backward()
            optim.step()


if __name__ == "__main__":
    main(parse())
"""


def test_a_warm_up_capped_per_epoch_has_no_decay(tmp_path):
    set_lr = "        for g in optim.param_groups:\n            g['lr'] = lr * min((ep + 1.0) / opt.warm_epoch, 1.0)"
    lr = verdicts(tmp_path, {"train.py": HAND_LR.format(set_lr=set_lr)})["lr-schedule"]
    assert lr["state"] == "missing" and "decay" in lr["reason"]


def test_a_rate_reset_to_the_configured_value_is_constant(tmp_path):
    set_lr = "        for g in optim.param_groups:\n            g['lr'] = opt.training.learning_rate"
    assert verdicts(tmp_path, {"train.py": HAND_LR.format(set_lr=set_lr)})["lr-schedule"]["state"] == "missing"


REWARD = """\
import copy

import torch


def main():
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    ema = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for x, captions in loader:
        noise = torch.randn_like(x)
        noised = diffusion.q_sample(x0=x, t=t, noise=noise)
        gen_videos = diffusion.ddim_sample_loop(noise=noised, model=model)
        loss = reward_scorer(captions=captions, denoised_x0=gen_videos)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(0.999).add_(p, alpha=0.001)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict()}, "ckpt.pt")


if __name__ == "__main__":
    main()
"""


def test_sampling_through_which_the_reward_is_backpropagated_is_training_not_evaluation(tmp_path):
    write_example({"train.py": REWARD}, tmp_path)
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(tmp_path / "train.py")])
    assert "EMA008" not in {f["code"] for f in json.loads(result.stdout)["findings"]}


INFERENCE = """\
import torch


def inference_entrance(cfg, diffusion):
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    model.load_state_dict(torch.load(cfg.checkpoint, map_location="cpu"))
    noise = torch.randn(4, 3, 8, 32, 32)
    videos = diffusion.ddim_sample_loop(noise=noise, model=model)
    torch.save(videos, "videos.pt")
"""


def test_a_sampler_that_loads_its_weights_from_a_checkpoint_is_no_live_sampling(tmp_path):
    train = REWARD.replace("import copy\n", "import copy\n\nfrom inference import inference_entrance\n").replace(
        "        gen_videos = diffusion.ddim_sample_loop(noise=noised, model=model)\n"
        "        loss = reward_scorer(captions=captions, denoised_x0=gen_videos)\n",
        "        loss = (model(noised) - noise).pow(2).mean()\n",
    )
    train = train.replace('    torch.save({"model"', '    inference_entrance(cfg, diffusion)\n    torch.save({"model"')
    write_example({"train.py": train, "inference.py": INFERENCE}, tmp_path)
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(tmp_path / "train.py")])
    assert "EMA008" not in {f["code"] for f in json.loads(result.stdout)["findings"]}
