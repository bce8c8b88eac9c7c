"""Noise schedule, prediction type and resolution rules (cosine, offset, zero-snr, vpred, resolution)
beyond their own VALID/INVALID examples: YAML settings, real-world spellings of public trainers
(diffusers examples, DiT, improved-diffusion, lucidrains, CompVis LDM), the reference trainer and
the fixtures' ground truth."""

from pathlib import Path

import pytest

from optimizer_tool.engine import run_check
from optimizer_tool.settings import Settings
from optimizer_tool.testing import findings_for, write_example

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("cosine", "offset", "zero-snr", "vpred", "resolution")


def codes(example, tmp_path) -> set[str]:
    return {f.code for f in findings_for(example, tmp_path) if f.key in KEYS}


def findings(example, tmp_path):
    return [f for f in findings_for(example, tmp_path) if f.key in KEYS]


def folder_findings(example: dict, tmp_path):
    """Check a whole project folder, as `t2s-opt check folder/` does (every file is a target)."""
    write_example(example, tmp_path)
    result, _ = run_check([tmp_path], Settings(only=KEYS))
    return [f for f in result.findings if f.key in KEYS]


LOOP = """\
import torch
import torch.nn.functional as F
for x in loader:
    noise = torch.randn_like(x)
    loss = F.mse_loss(model(x, noise), target_of(x, noise))
    loss.backward()
    optimizer.step()
"""


# --- YAML / TOML settings ------------------------------------------------------------------
def test_yaml_settings_are_read(tmp_path):
    found = findings(
        {
            "train.py": LOOP,
            "configs/base.yaml": (
                "model:\n"
                "  beta_schedule: linear\n"
                "  prediction_type: epsilon\n"
                "data:\n"
                "  image_size: 64\n"
                "  num_frames: 16\n"
            ),
        },
        tmp_path,
    )
    assert {f.code for f in found} == {"COS001", "VPRED001", "RES001"}
    assert all(f.location.path.name == "base.yaml" for f in found)
    cos = next(f for f in found if f.code == "COS001")
    assert cos.location.line == 2


def test_yaml_overrides_python_default(tmp_path):
    # the Python default says linear / eps, the YAML that the trainer loads says cosine / v
    example = {
        "train.py": (
            "import torch\n"
            "class Lit:\n"
            "    def __init__(self, beta_schedule='linear', parameterization='eps', image_size=128):\n"
            "        pass\n"
        )
        + LOOP,
        "configs/run.yaml": "model:\n  beta_schedule: cosine\n  parameterization: v\n",
    }
    assert codes(example, tmp_path) & {"COS001", "VPRED001"} == set()


def test_conflicting_values_are_not_claimed(tmp_path):
    example = {
        "train.py": LOOP,
        "configs/a.yaml": "beta_schedule: linear\n",
        "configs/b.yaml": "beta_schedule: cosine\n",
    }
    assert "COS001" not in codes(example, tmp_path)


def test_toml_settings(tmp_path):
    example = {
        "train.py": LOOP,
        "config.toml": '[train]\nprediction_type = "v_prediction"\nbeta_schedule = "scaled_linear"\n',
    }
    assert {"COS001", "ZSNR003"} <= codes(example, tmp_path)


# --- comments, strings, the other "noise offset" ------------------------------------------------
def test_comments_and_strings_never_count(tmp_path):
    example = LOOP + (
        "# beta_schedule = 'cosine'  prediction_type = 'v_prediction'\n"
        'NOTES = "use cosine with s=0.008 and rescale_zero_terminal_snr"\n'
        "import argparse\nparser = argparse.ArgumentParser()\n"
        "parser.add_argument('--beta_schedule', default='linear', help='cosine is better')\n"
    )
    assert "COS001" in codes(example, tmp_path)


def test_diffusers_noise_offset_is_not_the_cosine_offset(tmp_path):
    example = (
        "import argparse\nimport torch\nparser = argparse.ArgumentParser()\n"
        "parser.add_argument('--noise_offset', type=float, default=0.1)\nargs = parser.parse_args()\n"
        "for x in loader:\n"
        "    noise = torch.randn_like(x)\n"
        "    noise += args.noise_offset * torch.randn((x.shape[0], x.shape[1], 1, 1))\n"
        "    loss = model(x, noise)\n    loss.backward()\n    optimizer.step()\n"
    )
    assert not codes(example, tmp_path) & {"OFF001", "OFF002", "OFF003"}


# --- real-world spellings ----------------------------------------------------------------------
DIFFUSERS_UNCONDITIONAL = """\
import argparse
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=64, help="The resolution for input images")
    parser.add_argument("--train_batch_size", type=int, default=16)
    parser.add_argument("--prediction_type", type=str, default="epsilon", choices=["epsilon", "sample"])
    parser.add_argument("--ddpm_num_steps", type=int, default=1000)
    parser.add_argument("--ddpm_beta_schedule", type=str, default="linear")
    return parser.parse_args()

def main(args):
    model = UNet2DModel(sample_size=args.resolution, in_channels=3, out_channels=3, block_out_channels=(128, 128, 256, 256, 512, 512))
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule, prediction_type=args.prediction_type)
    for batch in loader:
        clean_images = batch["input"]
        noise = torch.randn(clean_images.shape).to(clean_images.device)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],))
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        model_output = model(noisy_images, timesteps).sample
        if args.prediction_type == "epsilon":
            loss = F.mse_loss(model_output, noise)
        elif args.prediction_type == "sample":
            loss = snr_weighted(model_output, clean_images)
        accelerator.backward(loss)
        optimizer.step()
"""  # noqa: E501


def test_diffusers_train_unconditional(tmp_path):
    found = findings(DIFFUSERS_UNCONDITIONAL, tmp_path)
    assert {f.code for f in found} == {"COS001", "VPRED001", "RES001"}
    assert {f.location.line for f in found} == {8, 10, 12}  # --resolution, --prediction_type, --ddpm_beta_schedule


def test_diffusers_train_unconditional_old_version(tmp_path):
    # DDPMScheduler(num_train_timesteps=1000): diffusers' defaults, linear + epsilon; the loss is against the noise
    example = (
        DIFFUSERS_UNCONDITIONAL.replace(
            "DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, "
            "beta_schedule=args.ddpm_beta_schedule, prediction_type=args.prediction_type)",
            "DDPMScheduler(num_train_timesteps=1000)",
        )
        .replace(
            '    parser.add_argument("--prediction_type", type=str, default="epsilon", '
            'choices=["epsilon", "sample"])\n',
            "",
        )
        .replace('    parser.add_argument("--ddpm_beta_schedule", type=str, default="linear")\n', "")
    )
    assert {"COS001", "VPRED001", "RES001"} <= codes(example, tmp_path)


SD_FINETUNE = """\
import argparse
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

parser = argparse.ArgumentParser()
parser.add_argument("--resolution", type=int, default=512)
parser.add_argument("--prediction_type", type=str, default=None)
parser.add_argument("--noise_offset", type=float, default=0)
args = parser.parse_args()
noise_scheduler = DDPMScheduler.from_pretrained(args.pretrained_model_name_or_path, subfolder="scheduler")
vae = AutoencoderKL.from_pretrained(args.pretrained_model_name_or_path, subfolder="vae")
unet = UNet2DConditionModel.from_pretrained(args.pretrained_model_name_or_path, subfolder="unet")
for batch in loader:
    latents = vae.encode(batch["pixel_values"]).latent_dist.sample() * vae.config.scaling_factor
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],))
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    if args.prediction_type is not None:
        noise_scheduler.register_to_config(prediction_type=args.prediction_type)
    if noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    elif noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
    loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    accelerator.backward(loss)
    optimizer.step()
"""


def test_stable_diffusion_finetune_is_not_judged(tmp_path):
    # schedule and prediction type come from the pretrained config; 512 px are 64x64 latents
    assert codes(SD_FINETUNE, tmp_path) == set()


def test_lora_finetune_with_plain_noise_loss(tmp_path):
    example = SD_FINETUNE.replace(
        '    loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")',
        "    loss = F.mse_loss(model_pred.float(), noise.float())",
    )
    assert codes(example, tmp_path) == set()


DIT = {
    "train.py": """\
import argparse
import torch
from copy import deepcopy
from diffusers.models import AutoencoderKL
from diffusion import create_diffusion
from models import DiT_models

parser = argparse.ArgumentParser()
parser.add_argument("--image-size", type=int, choices=[256, 512], default=256)
args = parser.parse_args()
latent_size = args.image_size // 8
model = DiT_models["DiT-XL/2"](input_size=latent_size, num_classes=1000)
diffusion = create_diffusion(timestep_respacing="")  # default: 1000 steps, linear noise schedule
vae = AutoencoderKL.from_pretrained("stabilityai/sd-vae-ft-ema")
for x, y in loader:
    with torch.no_grad():
        x = vae.encode(x).latent_dist.sample().mul_(0.18215)
    t = torch.randint(0, diffusion.num_timesteps, (x.shape[0],))
    loss = diffusion.training_losses(model, x, t, dict(y=y))["loss"].mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
""",
    "models.py": "DiT_models = {}\n",
    "diffusion/__init__.py": """\
from . import gaussian_diffusion as gd

def create_diffusion(timestep_respacing, noise_schedule="linear", use_kl=False, sigma_small=False, predict_xstart=False, learn_sigma=True, rescale_learned_sigmas=False, diffusion_steps=1000):
    betas = gd.get_named_beta_schedule(noise_schedule, diffusion_steps)
    return gd.GaussianDiffusion(betas=betas, model_mean_type=(gd.ModelMeanType.EPSILON if not predict_xstart else gd.ModelMeanType.START_X))
""",  # noqa: E501
    "diffusion/gaussian_diffusion.py": """\
import math
import numpy as np

def get_beta_schedule(beta_schedule, *, beta_start, beta_end, num_diffusion_timesteps):
    if beta_schedule == "linear":
        betas = np.linspace(beta_start, beta_end, num_diffusion_timesteps, dtype=np.float64)
    else:
        raise NotImplementedError(beta_schedule)
    return betas

def get_named_beta_schedule(schedule_name, num_diffusion_timesteps):
    if schedule_name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return get_beta_schedule("linear", beta_start=scale * 0.0001, beta_end=scale * 0.02, num_diffusion_timesteps=num_diffusion_timesteps)
    elif schedule_name == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)

def betas_for_alpha_bar(num_diffusion_timesteps, alpha_bar, max_beta=0.999):
    return [min(1 - alpha_bar((i + 1) / num_diffusion_timesteps) / alpha_bar(i / num_diffusion_timesteps), max_beta) for i in range(num_diffusion_timesteps)]

class GaussianDiffusion:
    def __init__(self, *, betas, model_mean_type):
        self.betas = betas
""",  # noqa: E501
}


def test_dit(tmp_path):
    found = findings(DIT, tmp_path)
    assert {f.code for f in found} == {"COS001", "VPRED001"}  # latent 32x32 is not a resolution finding
    assert all(f.location.path.as_posix().endswith("diffusion/__init__.py") for f in found)


IMPROVED_DIFFUSION = {
    "scripts/image_train.py": """\
import argparse
from improved_diffusion.script_util import model_and_diffusion_defaults, create_model_and_diffusion, args_to_dict, add_dict_to_argparser
from improved_diffusion.train_util import TrainLoop

def main():
    args = create_argparser().parse_args()
    model, diffusion = create_model_and_diffusion(**args_to_dict(args, model_and_diffusion_defaults().keys()))
    TrainLoop(model=model, diffusion=diffusion, batch_size=args.batch_size, lr=args.lr).run_loop()

def create_argparser():
    defaults = dict(data_dir="", lr=1e-4, batch_size=1, ema_rate="0.9999", lr_anneal_steps=0)
    defaults.update(model_and_diffusion_defaults())
    parser = argparse.ArgumentParser()
    add_dict_to_argparser(parser, defaults)
    return parser
""",  # noqa: E501
    "improved_diffusion/__init__.py": "",
    "improved_diffusion/script_util.py": """\
from . import gaussian_diffusion as gd

def model_and_diffusion_defaults():
    return dict(image_size=64, num_channels=128, num_res_blocks=3, learn_sigma=False, diffusion_steps=1000,
                noise_schedule="linear", timestep_respacing="", use_kl=False, predict_xstart=False, rescale_timesteps=True)

def create_model_and_diffusion(image_size, num_channels, num_res_blocks, learn_sigma, diffusion_steps, noise_schedule, timestep_respacing, use_kl, predict_xstart, rescale_timesteps):
    return None, create_gaussian_diffusion(steps=diffusion_steps, noise_schedule=noise_schedule, predict_xstart=predict_xstart)

def create_gaussian_diffusion(*, steps=1000, learn_sigma=False, sigma_small=False, noise_schedule="linear", use_kl=False, predict_xstart=False):
    betas = gd.get_named_beta_schedule(noise_schedule, steps)
    return betas

def add_dict_to_argparser(parser, default_dict):
    for k, v in default_dict.items():
        parser.add_argument(f"--{k}", default=v, type=type(v))

def args_to_dict(args, keys):
    return {k: getattr(args, k) for k in keys}
""",  # noqa: E501
    "improved_diffusion/gaussian_diffusion.py": """\
import math
import numpy as np

def get_named_beta_schedule(schedule_name, num_diffusion_timesteps):
    if schedule_name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    elif schedule_name == "cosine":
        return betas_for_alpha_bar(num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise NotImplementedError(schedule_name)

def betas_for_alpha_bar(num_diffusion_timesteps, alpha_bar, max_beta=0.999):
    return np.array([min(1 - alpha_bar((i + 1) / num_diffusion_timesteps) / alpha_bar(i / num_diffusion_timesteps), max_beta) for i in range(num_diffusion_timesteps)])
""",  # noqa: E501
    "improved_diffusion/train_util.py": "class TrainLoop:\n    pass\n",
}


def test_improved_diffusion(tmp_path):
    found = folder_findings(IMPROVED_DIFFUSION, tmp_path)
    assert {f.code for f in found} == {"COS001", "VPRED001", "RES001"}
    assert all(f.location.path.name == "script_util.py" and f.location.line in (4, 5) for f in found)


def test_improved_diffusion_cosine_flag(tmp_path):
    example = dict(IMPROVED_DIFFUSION)
    example["improved_diffusion/script_util.py"] = example["improved_diffusion/script_util.py"].replace(
        'noise_schedule="linear", timestep', 'noise_schedule="cosine", timestep'
    )
    assert {f.code for f in folder_findings(example, tmp_path)} == {"VPRED001", "RES001"}  # its cosine has the offset


LUCIDRAINS_SCRIPT = """\
from denoising_diffusion_pytorch import Unet, GaussianDiffusion, Trainer

model = Unet(dim=64, dim_mults=(1, 2, 4, 8), flash_attn=True)
diffusion = GaussianDiffusion(model, image_size=128, timesteps=1000, sampling_timesteps=250)
trainer = Trainer(diffusion, "path/to/your/images", train_batch_size=32, train_lr=8e-5, train_num_steps=700000, gradient_accumulate_every=2, ema_decay=0.995, amp=True)
trainer.train()
"""  # noqa: E501


def test_lucidrains_readme_script(tmp_path):
    # the library's defaults (objective, beta_schedule) are version-dependent: nothing is claimed
    assert codes(LUCIDRAINS_SCRIPT, tmp_path) == set()
    assert codes(LUCIDRAINS_SCRIPT.replace("image_size=128", "image_size=64"), tmp_path / "b") == {"RES001"}
    assert codes(
        LUCIDRAINS_SCRIPT.replace("sampling_timesteps=250", "sampling_timesteps=250, objective='pred_noise'"),
        tmp_path / "c",
    ) == {"VPRED001"}


LUCIDRAINS_VENDORED = """\
import math
import torch
import torch.nn.functional as F
from torch import nn

def extract(a, t, x_shape):
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))

def cosine_beta_schedule(timesteps, s=0.008):
    steps = timesteps + 1
    t = torch.linspace(0, timesteps, steps, dtype=torch.float64) / timesteps
    alphas_cumprod = torch.cos((t + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.999)

class GaussianDiffusion(nn.Module):
    def __init__(self, model, *, image_size, timesteps=1000, objective="pred_v", beta_schedule="cosine"):
        super().__init__()
        self.model = model
        self.objective = objective
        betas = cosine_beta_schedule(timesteps)
        self.register_buffer("betas", betas)

    def predict_start_from_noise(self, x_t, t, noise):
        return extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * noise

    def predict_start_from_v(self, x_t, t, v):
        return extract(self.sqrt_alphas_cumprod, t, x_t.shape) * x_t - extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * v

    def predict_v(self, x_start, t, noise):
        return extract(self.sqrt_alphas_cumprod, t, x_start.shape) * noise - extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * x_start

    def model_predictions(self, x, t):
        model_output = self.model(x, t)
        if self.objective == "pred_noise":
            x_start = self.predict_start_from_noise(x, t, model_output)
        elif self.objective == "pred_v":
            x_start = self.predict_start_from_v(x, t, model_output)
        return x_start

    def p_losses(self, x_start, t, noise=None):
        noise = noise if noise is not None else torch.randn_like(x_start)
        model_out = self.model(self.q_sample(x_start, t, noise), t)
        if self.objective == "pred_noise":
            target = noise
        elif self.objective == "pred_x0":
            target = x_start
        elif self.objective == "pred_v":
            target = self.predict_v(x_start, t, noise)
        loss = F.mse_loss(model_out, target, reduction="none")
        return loss.mean()

model = Unet(dim=64)
diffusion = GaussianDiffusion(model, image_size=128, objective="pred_v")
for x in loader:
    loss = diffusion(x)
    loss.backward()
    opt.step()
"""  # noqa: E501


def test_lucidrains_vendored_v_prediction(tmp_path):
    # v target and v sampler are right; the clipped cosine leaves terminal SNR > 0 (missing, not bug)
    assert codes(LUCIDRAINS_VENDORED, tmp_path) == {"ZSNR001"}


VIDEO_DIFFUSION = """\
import math
import torch
import torch.nn.functional as F
from torch import nn

def cosine_beta_schedule(timesteps, s=0.008):
    steps = timesteps + 1
    x = torch.linspace(0, timesteps, steps, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * torch.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.9999)

class GaussianDiffusion(nn.Module):
    def __init__(self, denoise_fn, *, image_size, num_frames, timesteps=1000, loss_type="l1"):
        super().__init__()
        self.denoise_fn = denoise_fn
        betas = cosine_beta_schedule(timesteps)
        self.loss_type = loss_type

    def p_losses(self, x_start, t, noise=None):
        noise = noise if noise is not None else torch.randn_like(x_start)
        x_recon = self.denoise_fn(self.q_sample(x_start=x_start, t=t, noise=noise), t)
        if self.loss_type == "l1":
            loss = F.l1_loss(noise, x_recon)
        elif self.loss_type == "l2":
            loss = F.mse_loss(noise, x_recon)
        return loss

model = Unet3D(dim=64, dim_mults=(1, 2, 4, 8))
diffusion = GaussianDiffusion(model, image_size=64, num_frames=10, timesteps=1000, loss_type="l1")
for x in loader:
    loss = diffusion(x)
    loss.backward()
    opt.step()
"""


def test_lucidrains_video_diffusion(tmp_path):
    found = findings(VIDEO_DIFFUSION, tmp_path)
    assert {f.code for f in found} == {"VPRED001", "RES001"}  # cosine with s; epsilon from the loss; 64x64x10
    res = next(f for f in found if f.code == "RES001")
    assert "64x64x10" in res.message


LDM_SCHEDULE = """\
import numpy as np
import torch

def make_beta_schedule(schedule, n_timestep, linear_start=1e-4, linear_end=2e-2, cosine_s=8e-3):
    if schedule == "linear":
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, n_timestep, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        timesteps = torch.arange(n_timestep + 1, dtype=torch.float64) / n_timestep + cosine_s
        alphas = timesteps / (1 + cosine_s) * np.pi / 2
        alphas = torch.cos(alphas).pow(2)
        alphas = alphas / alphas[0]
        betas = 1 - alphas[1:] / alphas[:-1]
        betas = np.clip(betas, a_min=0, a_max=0.999)
    return betas.numpy()

class DDPM:
    def __init__(self, unet_config, timesteps=1000, beta_schedule="linear", parameterization="eps", image_size=256):
        self.parameterization = parameterization
        self.register_schedule(beta_schedule=beta_schedule, timesteps=timesteps)

    def register_schedule(self, given_betas=None, beta_schedule="linear", timesteps=1000):
        betas = make_beta_schedule(beta_schedule, timesteps)

    def training_step(self, batch, batch_idx):
        loss = self.shared_step(batch)
        return loss
"""


def test_ldm_instantiated_from_config_runs_with_its_constructor_defaults(tmp_path):
    """DDPM is built by instantiate_from_config: checked on its own, its constructor defaults are what
    runs where a config leaves them out (the LDM configs set neither), and the findings say so."""
    found = {f.code: f for f in findings_for(LDM_SCHEDULE, tmp_path)}
    assert {"COS001", "VPRED001"} <= set(found)
    assert "nothing in this unit builds DDPM" in found["COS001"].message
    assert "unless that config sets parameterization" in found["VPRED001"].message


def test_cosine_lr_schedule_is_not_a_noise_schedule(tmp_path):
    example = LOOP + (
        "import math\nfrom torch.optim.lr_scheduler import LambdaLR\n"
        "def get_cosine_schedule_with_warmup(optimizer, warmup, total):\n"
        "    def lr_lambda(step):\n        progress = (step - warmup) / max(1, total - warmup)\n"
        "        return 0.5 * (1.0 + math.cos(math.pi * 2.0 * 0.5 * progress))\n"
        "    return LambdaLR(optimizer, lr_lambda)\n"
    )
    assert not codes(example, tmp_path) & {"OFF001", "OFF002", "OFF003"}


# --- zero terminal SNR ----------------------------------------------------------------------------
def test_zero_snr_only_with_v_prediction(tmp_path):
    example = (
        "from diffusers import DDPMScheduler\n"
        "noise_scheduler = DDPMScheduler(beta_schedule='scaled_linear', prediction_type='epsilon')\n"
    )
    assert not codes(example, tmp_path) & {"ZSNR001", "ZSNR002", "ZSNR003"}


def test_zero_snr_severity_follows_the_leftover_signal(tmp_path):
    sd2 = (
        "from diffusers import DDPMScheduler\n"
        "noise_scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', "
        "prediction_type='v_prediction')\n"
    )
    found = findings(sd2, tmp_path)
    assert [f.code for f in found if f.key == "zero-snr"] == ["ZSNR003"]
    assert "0.0047" in next(f.message for f in found if f.code == "ZSNR003")
    ddpm = "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(prediction_type='v_prediction')\n"
    found = findings(ddpm, tmp_path / "b")
    assert [f.code for f in found if f.key == "zero-snr"] == ["ZSNR001"]
    assert "4.0e-05" in next(f.message for f in found if f.code == "ZSNR001")


def test_zero_snr_rescale_function_in_use(tmp_path):
    scheduler = (
        "import torch\nfrom diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr\n"
        "prediction_type = 'v_prediction'\nbetas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2\n"
    )
    assert not codes(scheduler + "betas = rescale_zero_terminal_snr(betas)\n", tmp_path) & {"ZSNR001", "ZSNR003"}
    # defined but never applied
    defined = scheduler.replace(
        "from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr\n",
        "def rescale_zero_terminal_snr(betas):\n    return betas\n",
    )
    assert {"ZSNR001"} <= codes(defined, tmp_path / "b")


def test_trailing_spacing(tmp_path):
    ok = (
        "from diffusers import DDIMScheduler\n"
        "s = DDIMScheduler(beta_schedule='squaredcos_cap_v2', prediction_type='v_prediction', "
        "rescale_betas_zero_snr=True, timestep_spacing='trailing')\n"
    )
    assert codes(ok, tmp_path) == set()
    leading = ok.replace(", timestep_spacing='trailing'", "")
    assert codes(leading, tmp_path / "b") == {"ZSNR002"}


# --- v-prediction consistency -----------------------------------------------------------------
def test_v_config_with_noise_loss_in_a_yaml_project(tmp_path):
    example = {
        "train.py": (
            "import torch\n"
            "import torch.nn.functional as F\n"
            "for x in loader:\n"
            "    noise = torch.randn_like(x)\n"
            "    pred = model(q_sample(x, t, noise), t)\n"
            "    loss = F.mse_loss(pred, noise)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
        ),
        "config.yaml": "prediction_type: v_prediction\nbeta_schedule: cosine\n",
    }
    assert "VPRED002" in codes(example, tmp_path)


def test_loss_module_instance(tmp_path):
    example = (
        "import torch\nfrom torch import nn\nprediction_type = 'v_prediction'\ncriterion = nn.MSELoss()\n"
        "for x in loader:\n"
        "    noise = torch.randn_like(x)\n"
        "    loss = criterion(model(x, noise), noise)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
    )
    assert "VPRED002" in codes(example, tmp_path)


def test_sampler_scheduler_from_config_follows(tmp_path):
    example = (
        "from diffusers import DDIMScheduler, DDPMScheduler, DDPMPipeline\n"
        "noise_scheduler = DDPMScheduler(beta_schedule='squaredcos_cap_v2', prediction_type='v_prediction', "
        "rescale_betas_zero_snr=True, timestep_spacing='trailing')\n"
        "sampler = DDIMScheduler.from_config(noise_scheduler.config)\n"
        "pipe = DDPMPipeline(unet=unet, scheduler=noise_scheduler)\n"
    )
    assert codes(example, tmp_path) == set()


# --- resolution -----------------------------------------------------------------------------------
def test_resolution_tuple_and_frames_first(tmp_path):
    assert codes("video_size = (16, 64, 64)\n", tmp_path) == {"RES001"}
    assert codes("video_size = (16, 96, 96)\n", tmp_path / "b") == set()


def test_resolution_cifar_is_fixed(tmp_path):
    example = (
        "import torchvision\n"
        "from torchvision.datasets import CIFAR10\n"
        "ds = CIFAR10('data', train=True)\n"
        "image_size = 32\n"
    )
    assert codes(example, tmp_path) == set()


def test_budget_adjusted_by_batch_one(tmp_path):
    example = {
        "train.py": LOOP + "from config import Config\n",
        "config.py": (
            "from dataclasses import dataclass\n"
            "\n"
            "@dataclass\n"
            "class Config:\n"
            "    image_size: int = 128\n"
            "    num_frames: int = 16\n"
            "    model_channels: int = 96\n"
            "    batch_size: int = 1\n"
        ),
    }
    assert "RES002" not in codes(example, tmp_path)


# --- the reference trainer and the fixtures -------------------------------------------------------
def _check(path: Path) -> set[str]:
    result, _ = run_check([path], Settings(only=KEYS))
    return {f.code for f in result.findings if f.key in KEYS}


def test_reference_trainer():
    """The plan's trainer as the plan found it: linear, no cosine offset, epsilon, 64x64x16."""
    assert _check(ROOT / "reference_trainer") == {"COS001", "OFF001", "VPRED001", "RES001"}


FIXTURES = {
    # fixture: the codes of these five keys its INTENT.md asks for
    "plan_snippets": {"ZSNR001"},
    "fully_optimized": set(),
    "lightning_module": {"OFF003", "ZSNR001", "VPRED003", "RES001"},
    "openai_trainloop": {"VPRED001", "RES001"},
    "dit_style": {"COS001", "VPRED001"},
    "comments_only": {"COS001", "VPRED001", "RES001"},
    "diffusers_accelerate": {"VPRED001"},
    "plain_amp_loop": {"VPRED001", "RES001"},
    "lucidrains_trainer": {"ZSNR001"},
    "timm_video_trainer": {"RES002", "ZSNR001"},
    "smoke_diverging_lr": {"COS001", "VPRED001", "RES001"},
    "smoke_ema_never_updated": {"COS001", "VPRED001", "RES001"},
    "smoke_nan_loss": {"COS001", "VPRED001", "RES001"},
}
# Deliberate difference from the fixtures' INTENT.md: their zero-snr "missing" on epsilon trainers
# (plain_amp_loop, dit_style, openai_trainloop, comments_only, smoke_*) is not reported: zero
# terminal SNR is only defined for v-prediction, and VPRED001 already asks for the switch.


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_ground_truth(name):
    folder = ROOT / "fixtures" / "trainers" / name
    if not folder.is_dir():
        pytest.skip(f"fixture {name} not present")
    assert _check(folder) == FIXTURES[name]


def test_prediction_type_registered_later(tmp_path):
    example = (
        "from diffusers import DDPMScheduler\n"
        "noise_scheduler = DDPMScheduler(beta_schedule='squaredcos_cap_v2', rescale_betas_zero_snr=True)\n"
        "noise_scheduler.register_to_config(prediction_type='v_prediction')\n"
    )
    assert not codes(example, tmp_path) & {"VPRED001", "VPRED003"}


def test_resume_hook_is_not_fine_tuning(tmp_path):
    # newer train_unconditional.py: from scratch, but its accelerate load hook calls UNet2DModel.from_pretrained
    example = DIFFUSERS_UNCONDITIONAL + (
        "\ndef load_model_hook(models, input_dir):\n"
        "    load_model = UNet2DModel.from_pretrained(input_dir, subfolder='unet')\n"
        "    models.pop().load_state_dict(load_model.state_dict())\n"
    )
    assert codes(example, tmp_path) == {"COS001", "VPRED001", "RES001"}


DISPATCHER = """\
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR


def warmup_only(optimizer, warmup_steps=5000):
    return LambdaLR(optimizer, lambda step: min(step / warmup_steps, 1))


def get_lr_scheduler(optimizer, name, **kwargs):
    if name == "customized":
        return warmup_only(optimizer, **kwargs)
    elif name == "cosine":
        return {cosine}
    else:
        raise NotImplementedError(name)


class TrainState:
    def __init__(self, optimizer, lr_scheduler):
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler


def train(model, data, name):
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    lr_scheduler = get_lr_scheduler(optimizer, name)
    state = TrainState(optimizer=optimizer, lr_scheduler=lr_scheduler)
    for x in data:
        model(x).mean().backward()
        optimizer.step()
        lr_scheduler.step()
    return state


if __name__ == "__main__":
    train(torch.nn.Linear(2, 2), [torch.randn(4, 2)] * 10, "customized")
"""


def lr_verdict(text: str, tmp_path) -> tuple[str, set[str]]:
    (tmp_path / "train.py").write_text(text)
    result, _ = run_check([tmp_path / "train.py"], Settings())
    state = result.facts[0].verdicts["lr-schedule"].state
    return state.value if hasattr(state, "value") else str(state), {f.code for f in result.findings}


def test_alternative_schedules_are_judged_one_at_a_time(tmp_path):
    """A ``get_lr_scheduler(name)`` dispatcher whose branches give a warm-up-only LambdaLR or a
    decay-only cosine (U-ViT): a run gets one of them, never both, so no run warms up *and* decays
    (it was read as present: the warm-up of one branch and the decay of the other)."""
    state, found = lr_verdict(DISPATCHER.format(cosine="CosineAnnealingLR(optimizer, **kwargs)"), tmp_path)
    assert state == "missing"
    assert {"LR002", "LR007"} <= found


def test_schedules_that_run_together_or_a_complete_alternative_still_pass(tmp_path):
    together = DISPATCHER.replace(
        "    lr_scheduler = get_lr_scheduler(optimizer, name)\n",
        '    lr_scheduler = get_lr_scheduler(optimizer, "cosine", T_max=100)\n    warm = warmup_only(optimizer)\n',
    ).replace("        lr_scheduler.step()\n", "        lr_scheduler.step()\n        warm.step()\n")
    state, found = lr_verdict(together.format(cosine="CosineAnnealingLR(optimizer, **kwargs)"), tmp_path)
    assert not {"LR002", "LR007"} & found, found
    complete = "SequentialLR(optimizer, [warmup_only(optimizer), CosineAnnealingLR(optimizer, 100)], [5000])"
    text = DISPATCHER.format(cosine=complete).replace("LambdaLR\n", "LambdaLR, SequentialLR\n")
    state, found = lr_verdict(text, tmp_path)
    assert not {"LR002", "LR007"} & found, found


OPTIMIZE_FN = """\
import numpy as np
import torch

LR, WARMUP, TOTAL = 2e-4, 5000, 100000


def optimization_manager(lr=LR, warmup=WARMUP):
    def optimize_fn(optimizer, params, step):
        if warmup > 0:
            for g in optimizer.param_groups:
                g["lr"] = {expression}
        optimizer.step()

    return optimize_fn


def train(model, data):
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    optimize_fn = optimization_manager()
    for step, x in enumerate(data):
        model(x).mean().backward()
        optimize_fn(optimizer, model.parameters(), step)


if __name__ == "__main__":
    train(torch.nn.Linear(2, 2), [torch.randn(4, 2)] * 10)
"""


@pytest.mark.parametrize(
    "expression, no_decay",
    [
        ("lr * np.minimum(step / warmup, 1.0)", True),  # score_sde: warm-up, then constant
        ("min(1.0, step / warmup) * lr", True),
        ("lr * min(step / warmup, 1.0) * 0.5 * (1 + np.cos(np.pi * step / TOTAL))", False),  # and a cosine decay
    ],
)
def test_a_hand_written_warmup_that_then_stays_constant_has_no_decay(tmp_path, expression, no_decay):
    state, found = lr_verdict(OPTIMIZE_FN.format(expression=expression), tmp_path)
    assert ("LR002" in found) is no_decay, found
    assert state == ("missing" if no_decay else "present")


ADJUST_LR = """\
import argparse
import math
import torch


def adjust_learning_rate(optimizer, epoch, args):
    if epoch < args.warmup_epochs:
        lr = args.lr * epoch / args.warmup_epochs
    else:
        if args.lr_schedule == "constant":
            lr = args.lr
        elif args.lr_schedule == "cosine":
            lr = args.min_lr + (args.lr - args.min_lr) * 0.5 * (
                1.0 + math.cos(math.pi * (epoch - args.warmup_epochs) / (args.epochs - args.warmup_epochs))
            )
        else:
            raise NotImplementedError
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    return lr


def main(args):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        for i, x in enumerate([torch.randn(4, 2)] * 10):
            adjust_learning_rate(optimizer, i / 10 + epoch, args)
            model(x).mean().backward()
            optimizer.step()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--min_lr", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--warmup_epochs", type=int, default=100)
    parser.add_argument("--lr_schedule", type=str, default="{default}")
    main(parser.parse_args())
"""


@pytest.mark.parametrize("default, state", [("constant", "off-by-default"), ("cosine", "present")])
def test_a_hand_written_decay_in_a_branch_the_default_never_takes_is_off_by_default(tmp_path, default, state):
    """MAR's ``adjust_learning_rate``: warm-up, then ``constant`` unless ``--lr_schedule cosine``; the
    cosine formula feeding ``param_group["lr"]`` made it read as present."""
    got, found = lr_verdict(ADJUST_LR.replace("{default}", default), tmp_path)
    assert got == state
    assert ("LR002" in found) is (state != "present")


NAMED_BY_A_PARAMETER = """\
import torch
from diffusers.optimization import get_scheduler


def main(lr_scheduler: str = "constant", lr_warmup_steps: int = 0, **kwargs):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = get_scheduler(lr_scheduler, optimizer=optimizer, num_warmup_steps=lr_warmup_steps,
                              num_training_steps=1000)
    for x in [torch.randn(4, 2)] * 10:
        model(x).mean().backward()
        optimizer.step()
        scheduler.step()


if __name__ == "__main__":
    import sys
    from omegaconf import OmegaConf

    main(**OmegaConf.load(sys.argv[1]))
"""


def test_a_schedule_named_by_a_variable_is_not_a_pass(tmp_path):
    """AnimateDiff: ``get_scheduler(lr_scheduler, ...)`` with the name a parameter filled from a YAML
    and no warm-up: whether it decays is not known here, so no `present` (it was a wrong pass)."""
    state, found = lr_verdict(NAMED_BY_A_PARAMETER, tmp_path)
    assert state == "unknown", (state, found)
