"""Diffusion code written by hand, as small public trainers write it (minDiffusion, the
Conditional_Diffusion_MNIST script, dome272's DDPM, ermongroup's DDIM): betas computed by
arithmetic in a helper, a loss module held as a parameter default, noise returned by a helper,
an MSE written out. Each used to leave the key `unknown`; a selector that picks the schedule
by a name read from a config must stay undecided."""

from __future__ import annotations

import pytest

from optimizer_tool.engine import run_check
from optimizer_tool.settings import Settings
from optimizer_tool.testing import findings_for

TRAIN = """\
import torch
import torch.nn as nn
{helpers}

class DDPM(nn.Module):
    def __init__(self, eps_model, betas=(1e-4, 0.02), n_T=1000, criterion=nn.MSELoss()):
        super().__init__()
        self.eps_model = eps_model
{init}
        self.n_T = n_T
        self.criterion = criterion

    def forward(self, x):
        _ts = torch.randint(1, self.n_T + 1, (x.shape[0],))
{forward}


def train():
    ddpm = DDPM(eps_model=nn.Linear(4, 4))
    optim = torch.optim.Adam(ddpm.parameters(), lr=2e-4)
    for x in [torch.randn(8, 4)] * 10:
        optim.zero_grad()
        loss = ddpm(x)
        loss.backward()
        optim.step()


if __name__ == "__main__":
    train()
"""

SCHEDULES_HELPER = """
def ddpm_schedules(beta1, beta2, T):
    beta_t = (beta2 - beta1) * torch.arange(0, T + 1, dtype=torch.float32) / T + beta1
    sqrt_beta_t = torch.sqrt(beta_t)
    alphabar_t = torch.cumsum(torch.log(1 - beta_t), dim=0).exp()
    return {"sqrtab": torch.sqrt(alphabar_t), "sqrtmab": torch.sqrt(1 - alphabar_t), "sqrt_beta_t": sqrt_beta_t}
"""
REGISTER = """\
        for k, v in ddpm_schedules(betas[0], betas[1], n_T).items():
            self.register_buffer(k, v)"""
CRITERION_LOSS = """\
        eps = torch.randn_like(x)
        x_t = self.sqrtab[_ts, None] * x + self.sqrtmab[_ts, None] * eps
        return self.criterion(eps, self.eps_model(x_t))"""

METHOD_INIT = """\
        self.beta = self.prepare_noise_schedule(betas, n_T)
        self.alpha_hat = torch.cumprod(1.0 - self.beta, dim=0)

    def prepare_noise_schedule(self, betas, n_T):
        return torch.linspace(betas[0], betas[1], n_T)

    def noise_images(self, x, t):
        sqrt_alpha_hat = torch.sqrt(self.alpha_hat[t])[:, None]
        sqrt_one_minus_alpha_hat = torch.sqrt(1 - self.alpha_hat[t])[:, None]
        e = torch.randn_like(x)
        return sqrt_alpha_hat * x + sqrt_one_minus_alpha_hat * e, e"""
TUPLE_LOSS = """\
        x_t, noise = self.noise_images(x, _ts)
        predicted_noise = self.eps_model(x_t)
        return ((noise - predicted_noise) ** 2).mean()"""


def verdicts(tmp_path, text: str) -> dict[str, str]:
    (tmp_path / "train.py").write_text(text)
    result, _ = run_check([tmp_path / "train.py"], Settings())
    return {k: v.state.value for k, v in result.facts[0].verdicts.items()}


def test_betas_from_a_helper_by_arithmetic_and_a_loss_module_held_as_a_default(tmp_path):
    got = verdicts(tmp_path, TRAIN.format(helpers=SCHEDULES_HELPER, init=REGISTER, forward=CRITERION_LOSS))
    assert got["cosine"] == "missing"  # (b2 - b1) * arange(T + 1) / T + b1 is linear
    assert got["offset"] == "n/a"  # no cosine schedule, no offset to judge
    assert got["vpred"] == "missing"  # criterion=nn.MSELoss() compares with the sampled eps
    assert got["zero-snr"] == "n/a"


def test_betas_from_a_method_returning_linspace_and_noise_returned_by_a_helper(tmp_path):
    got = verdicts(tmp_path, TRAIN.format(helpers="", init=METHOD_INIT, forward=TUPLE_LOSS))
    assert got["cosine"] == "missing"
    assert got["vpred"] == "missing"  # ((noise - pred) ** 2).mean(), noise from noise_images()[1]


@pytest.mark.parametrize(
    "expression",
    [
        "(noise - predicted_noise).pow(2).mean()",
        "(noise - predicted_noise).square().sum(dim=1).mean()",
        "torch.mean((noise - predicted_noise) ** 2)",
        # ermongroup/ddim: the reduction names its dimensions
        "(noise - predicted_noise).square().sum(dim=(1, 2, 3)).mean(dim=0)",
        # U-ViT: a helper of the project squares and reduces its argument
        "mos(noise - predicted_noise)",
    ],
)
def test_hand_written_mse_against_the_noise_is_an_epsilon_objective(tmp_path, expression):
    forward = TUPLE_LOSS.replace("((noise - predicted_noise) ** 2).mean()", expression)
    helpers = "\ndef mos(a, start_dim=1):\n    return a.pow(2).flatten(start_dim=start_dim).mean(dim=-1)\n"
    assert verdicts(tmp_path, TRAIN.format(helpers=helpers, init=METHOD_INIT, forward=forward))["vpred"] == "missing"


def test_a_helper_that_does_not_square_is_no_loss(tmp_path):
    forward = TUPLE_LOSS.replace("((noise - predicted_noise) ** 2).mean()", "mos(noise - predicted_noise)")
    helpers = "\ndef mos(a, start_dim=1):\n    return a.flatten(start_dim=start_dim).mean(dim=-1)\n"
    assert verdicts(tmp_path, TRAIN.format(helpers=helpers, init=METHOD_INIT, forward=forward))["vpred"] == "unknown"


EDM = """import torch


class EDMLoss:
    def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data

    def __call__(self, net, images):
        rnd_normal = torch.randn([images.shape[0], 1, 1, 1], device=images.device)
        sigma = (rnd_normal * self.P_std + self.P_mean).exp()
        weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
        n = torch.randn_like(images) * sigma
        D_yn = net(images + n, sigma)
        return weight * ((D_yn - images) ** 2)


def train(net, loader):
    loss_fn = EDMLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for images in loader:
        opt.zero_grad()
        loss_fn(net, images).sum().backward()
        opt.step()


if __name__ == "__main__":
    train(build(), data())
"""


def test_continuous_sigma_noising_has_no_beta_schedule(tmp_path):
    """NVlabs/edm, openai/consistency_models: cosine, its offset and zero terminal SNR concern a beta
    schedule, which a trainer that draws sigma continuously does not have (they used to be unknown)."""
    got = verdicts(tmp_path, EDM)
    assert got["cosine"] == "n/a" and got["offset"] == "n/a" and got["zero-snr"] == "n/a"
    # a beta schedule beside it: the sigma reading does not apply
    with_betas = EDM.replace("def train(", "betas = torch.linspace(1e-4, 0.02, 1000)\n\n\ndef train(")
    assert verdicts(tmp_path, with_betas)["cosine"] != "n/a"


def test_a_cosine_helper_written_by_hand_is_cosine(tmp_path):
    helper = SCHEDULES_HELPER.replace(
        "    beta_t = (beta2 - beta1) * torch.arange(0, T + 1, dtype=torch.float32) / T + beta1\n",
        "    steps = torch.arange(0, T + 1, dtype=torch.float32) / T\n"
        "    alphas_cumprod = torch.cos((steps + 0.008) / 1.008 * 3.14159 / 2) ** 2\n"
        "    beta_t = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]\n",
    )
    assert (
        verdicts(tmp_path, TRAIN.format(helpers=helper, init=REGISTER, forward=CRITERION_LOSS))["cosine"] == "present"
    )


SELECTOR = """
import numpy as np


def get_beta_schedule(beta_schedule, *, beta_start, beta_end, num_diffusion_timesteps):
    if beta_schedule == "quad":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, num_diffusion_timesteps) ** 2
    elif beta_schedule == "linear":
        betas = np.linspace(beta_start, beta_end, num_diffusion_timesteps)
    else:
        raise NotImplementedError(beta_schedule)
    return betas
"""
SELECTED = """\
        self.betas = torch.from_numpy(get_beta_schedule(
            beta_schedule=self.config.beta_schedule, beta_start=betas[0], beta_end=betas[1], num_diffusion_timesteps=n_T
        ))"""


def test_a_selector_fed_by_a_config_is_not_followed_into_one_of_its_branches(tmp_path):
    got = verdicts(tmp_path, TRAIN.format(helpers=SELECTOR, init=SELECTED, forward=CRITERION_LOSS))
    assert got["cosine"] == "unknown"  # the config picks "quad" or "linear": not read from the branches


DIFFUSERS_FINETUNE = """\
import argparse
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel

parser = argparse.ArgumentParser()
parser.add_argument("--prediction_type", type=str, default=None)
args = parser.parse_args()
noise_scheduler = DDPMScheduler.from_pretrained("runwayml/stable-diffusion-v1-5", subfolder="scheduler")
unet = UNet2DConditionModel.from_pretrained("runwayml/stable-diffusion-v1-5", subfolder="unet")
optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
if args.prediction_type is not None:
    noise_scheduler.register_to_config(prediction_type=args.prediction_type)
for latents, text in []:
    noise = torch.randn_like(latents)
    t = torch.randint(0, 1000, (latents.shape[0],))
    noisy = noise_scheduler.add_noise(latents, noise, t)
    if noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    elif noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    loss = F.mse_loss(unet(noisy, t, text).sample.float(), target.float())
    loss.backward()
    optimizer.step()
"""


def test_a_pretrained_scheduler_decides_the_objective_and_its_cosine_has_the_offset(tmp_path):
    got = verdicts(tmp_path, DIFFUSERS_FINETUNE)
    assert got["vpred"] == "decided-elsewhere"
    assert got["zero-snr"] == "decided-elsewhere"
    assert got["offset"] == "n/a"
    assert got["cosine"] == "decided-elsewhere"


CIFAR = """\
import torch
import torch.nn.functional as F
from torchvision import transforms
from torchvision.datasets import CIFAR10


class Up(torch.nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")


model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), Up())
dataset = CIFAR10("data", transform=transforms.Compose([{resize}transforms.ToTensor()]))
optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
for x, _ in torch.utils.data.DataLoader(dataset, batch_size=8):
    noise = torch.randn_like(x)
    t = torch.randint(0, 1000, (x.shape[0],))
    loss = F.mse_loss(model(x + noise), noise)
    loss.backward()
    optimizer.step()
"""


def test_a_fixed_size_dataset_trained_as_loaded_has_its_native_resolution(tmp_path):
    """pytorch-ddpm / minDiffusion: CIFAR10 with no size setting trains at 32 px (the model's own
    ``F.interpolate`` upsampling is not a resize of the data)."""
    assert verdicts(tmp_path, CIFAR.format(resize=""))["resolution"] == "missing"
    assert verdicts(tmp_path, CIFAR.format(resize="transforms.Resize(128), "))["resolution"] != "missing"


def test_sign_language_wording_only_for_sign_language_trainers(tmp_path):
    """Issue 11: 'hands and fingers, which carry most of a sign's meaning' on a CIFAR trainer."""
    (tmp_path / "train.py").write_text(CIFAR.format(resize="transforms.Resize(64), "))
    result, _ = run_check([tmp_path / "train.py"], Settings())
    messages = [f.message for f in result.findings if f.key in ("lpips", "resolution")]
    assert messages and not [m for m in messages if "hand" in m or "sign" in m], messages
    signs = CIFAR.format(resize="transforms.Resize(64), ").replace(
        "dataset = CIFAR10", "glosses = []\ndataset = CIFAR10"
    )
    (tmp_path / "train.py").write_text(signs)
    result, _ = run_check([tmp_path / "train.py"], Settings())
    assert any("hand" in f.message for f in result.findings if f.key == "lpips")


RUN_TIME_SIZE = """\
import torch
import torch.nn.functional as F


def train(config, model, loader):
    image_size = config.data.image_size
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    for x in loader:
        x = F.interpolate(x, size=image_size)
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (x.shape[0],))
        loss = F.mse_loss(model(x + noise, t), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


def test_a_resolution_read_at_run_time_is_decided_elsewhere(tmp_path):
    """ddim, imagen, Latte, PixArt, EDM: `image_size = config.data.image_size` was unknown ("no
    training resolution setting found"); the config chosen at run time decides it."""
    assert verdicts(tmp_path, RUN_TIME_SIZE)["resolution"] == "decided-elsewhere"
    no_setting = RUN_TIME_SIZE.replace("    image_size = config.data.image_size\n", "").replace(
        "size=image_size", "scale_factor=2"
    )
    assert verdicts(tmp_path, no_setting)["resolution"] == "unknown"


HAND_LR = """\
import torch
import torch.nn.functional as F


def train(model, loader, lrate=1e-4, n_epoch=20, lr_rampup_kimg=10000, batch_size=64):
    optim = torch.optim.Adam(model.parameters(), lr=lrate)
    cur_nimg = 0
    for ep in range(n_epoch):
{lr}
        for x in loader:
            noise = torch.randn_like(x)
            loss = F.mse_loss(model(x + noise), noise)
            optim.zero_grad()
            loss.backward()
            optim.step()
            cur_nimg += batch_size


if __name__ == "__main__":
    train(build(), data())
"""


def test_a_linear_decay_written_by_hand_decays_and_never_warms_up(tmp_path):
    """TeaPearce/Conditional_Diffusion_MNIST: lrate * (1 - ep / n_epoch) was unknown."""
    lr = "        optim.param_groups[0]['lr'] = lrate * (1 - ep / n_epoch)"
    assert verdicts(tmp_path, HAND_LR.format(lr=lr))["lr-schedule"] == "missing"
    # through a variable: frac = ep / n_epoch; lr = lrate * (1 - frac)
    lr = (
        "        frac = ep / n_epoch\n        lr = lrate * (1 - frac)\n"
        "        for g in optim.param_groups:\n            g['lr'] = lr"
    )
    assert verdicts(tmp_path, HAND_LR.format(lr=lr))["lr-schedule"] == "missing"


def test_an_edm_ramp_up_is_a_warm_up_without_decay(tmp_path):
    """NVlabs/edm: lr * min(cur_nimg / max(lr_rampup_kimg * 1000, 1e-8), 1) was unknown."""
    lr = (
        "        for g in optim.param_groups:\n"
        "            g['lr'] = lrate * min(cur_nimg / max(lr_rampup_kimg * 1000, 1e-8), 1)"
    )
    found = {f.code for f in findings_for(HAND_LR.format(lr=lr), tmp_path)}
    assert "LR002" in found and "LR001" not in found  # warms up, never decays


PRECOND = """

class EDMPrecond(torch.nn.Module):
    def __init__(self, model, sigma_data=0.5):
        super().__init__()
        self.model, self.sigma_data = model, sigma_data

    def forward(self, x, sigma):
        c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()
        return c_skip * x + c_out * self.model(x, sigma)
"""


def test_edm_preconditioning_is_a_well_conditioned_target(tmp_path):
    """NVlabs/edm and consistency models: the vpred key was unknown; EDM's c_skip/c_out make the
    network's target well conditioned at every noise level, as v-prediction does."""
    assert verdicts(tmp_path, EDM)["vpred"] == "unknown"
    assert verdicts(tmp_path, EDM.replace("\n\ndef train(", PRECOND + "\n\ndef train(", 1))["vpred"] == "present"
    # c_skip = 1 is no preconditioning of that kind
    plain = PRECOND.replace("self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)", "1")
    assert verdicts(tmp_path, EDM.replace("\n\ndef train(", plain + "\n\ndef train(", 1))["vpred"] == "unknown"


FLOW = """\
import torch


def train(model, loader):
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    for x in loader:
        t = torch.sigmoid(torch.randn((x.shape[0],)))
        texp = t.view([x.shape[0], 1, 1, 1])
        z1 = torch.randn_like(x)
        zt = (1 - texp) * x + texp * z1
        vtheta = model(zt, t)
        loss = ((z1 - x - vtheta) ** 2).mean(dim=list(range(1, len(x.shape))))
        opt.zero_grad()
        loss.mean().backward()
        opt.step()


if __name__ == "__main__":
    train(build(), data())
"""


def test_a_rectified_flow_path_is_a_diffusion_trainer_without_beta_schedule(tmp_path):
    """cloneofsimo/minRF: every diffusion key was unknown ("no objective recognised")."""
    got = verdicts(tmp_path, FLOW)
    assert got["cosine"] == "n/a" and got["offset"] == "n/a"
    assert got["vpred"] == "present" and got["zero-snr"] == "present"
    assert got["lpips"] == "missing"
    # the same arithmetic on something that is not sampled noise is no flow path
    assert verdicts(tmp_path, FLOW.replace("z1 = torch.randn_like(x)", "z1 = x.flip(0)"))["vpred"] == "unknown"


REGISTRY = {
    "losses.py": """\
def noise_estimation_loss(model, x0, t, e, b):
    a = (1 - b).cumprod(dim=0).index_select(0, t).view(-1, 1, 1, 1)
    x = x0 * a.sqrt() + e * (1.0 - a).sqrt()
    output = model(x, t.float())
    return (e - output).square().sum(dim=(1, 2, 3)).mean(dim=0)


loss_registry = {
    "simple": noise_estimation_loss,
}
""",
    "train.py": """\
import torch
from losses import loss_registry


def train(model, loader, config, betas):
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    for x in loader:
        e = torch.randn_like(x)
        t = torch.randint(0, 1000, (x.shape[0],))
        loss = loss_registry[config.model.type](model, x, t, e, betas)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    train(build(), data(), load(), make_betas())
""",
}


def test_a_loss_picked_from_a_dict_registry_is_reached_and_its_noise_followed(tmp_path):
    """ermongroup/ddim: `loss_registry[config.model.type](model, x, t, e, b)`; the parameter `e` of
    noise_estimation_loss is the noise sampled at the call site. vpred and lpips were unknown."""
    (tmp_path / "losses.py").write_text(REGISTRY["losses.py"])
    got = verdicts(tmp_path, REGISTRY["train.py"])
    assert got["vpred"] == "missing" and got["lpips"] == "missing"
    # the same parameter fed with something else is not the noise
    got = verdicts(tmp_path, REGISTRY["train.py"].replace("(model, x, t, e, betas)", "(model, x, t, x.flip(0), betas)"))
    assert got["vpred"] != "missing"


NAMED_LR = """\
import numpy as np
import torch


def learning_rate_schedule(cur_nimg, batch_size, ref_lr=100e-4, ref_batches=70e3, rampup_Mimg=10):
    lr = ref_lr
    if ref_batches > 0:
        lr /= np.sqrt(max(cur_nimg / (ref_batches * batch_size), 1))
    if rampup_Mimg > 0:
        lr *= min(cur_nimg / (rampup_Mimg * 1e6), 1)
    return lr


def training_loop(net, loader, loss_fn, batch_size=64, lr_kwargs=dict(func_name="train.learning_rate_schedule")):
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    state = dict(cur_nimg=0, total_elapsed_time=0)
    for images in loader:
        loss_fn(net, images).sum().backward()
        lr = call_func_by_name(cur_nimg=state["cur_nimg"], batch_size=batch_size, **lr_kwargs)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.step()
        state["cur_nimg"] += batch_size
"""


def test_an_lr_function_named_by_a_string_is_read(tmp_path):
    """NVlabs/edm2: the schedule is dispatched by name (lr_kwargs func_name) and has a ramp-up and an
    inverse-square-root decay; the loop was not reached when its module was checked alone, and the
    keyword name `total_elapsed_time` of a dict() read as a decay. Was: missing (a wrong verdict)."""
    assert verdicts(tmp_path, NAMED_LR)["lr-schedule"] == "present"
    no_decay = NAMED_LR.replace(
        "        lr /= np.sqrt(max(cur_nimg / (ref_batches * batch_size), 1))\n", "        pass\n"
    )
    assert verdicts(tmp_path, no_decay)["lr-schedule"] != "present"  # a warm-up, no decay


BRANCH_LR = """\
import math
import torch


def lr_annealing(optimizer, peak_lr, cur_it, wp_it, max_it, wp0=0.005):
    if cur_it < wp_it:
        cur_lr = wp0 + (1 - wp0) * cur_it / wp_it
    else:
        pasd = (cur_it - wp_it) / (max_it - 1 - wp_it)
        cur_lr = 0.5 + 0.5 * math.cos(math.pi * pasd)
    cur_lr *= peak_lr
    for param_group in optimizer.param_groups:
        param_group["lr"] = cur_lr


def train(model, loader, max_it=1000):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for it, x in enumerate(loader):
        lr_annealing(opt, 1e-4, it, 50, max_it)
        model(x).mean().backward()
        opt.step()


if __name__ == "__main__":
    train(build(), data())
"""


def test_a_warm_up_written_as_a_branch_is_a_warm_up(tmp_path):
    """FoundationVision/VAR's lr_wd_annealing: `if cur_it < wp_it:` ramps the rate; was read as
    decay-only (missing, a wrong verdict)."""
    assert verdicts(tmp_path, BRANCH_LR)["lr-schedule"] == "present"


SCALER_LOOP = """\
import argparse
import torch


class NativeScaler:
    def __init__(self):
        self._scaler = torch.cuda.amp.GradScaler()

    def __call__(self, loss, optimizer, clip_grad=None, parameters=None):
        self._scaler.scale(loss).backward()
        if clip_grad is not None:
            self._scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, clip_grad)
        self._scaler.step(optimizer)
        self._scaler.update()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--decay_lr", action="store_true")
    args = parser.parse_args()
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    if args.decay_lr:
        lr_schedule = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=1e-8 / args.lr)
    else:
        lr_schedule = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    loss_scaler = NativeScaler()
    for x in data():
        loss_scaler(model(x).mean(), optimizer, parameters=model.parameters())
        lr_schedule.step()


if __name__ == "__main__":
    main()
"""


def test_clipping_behind_a_callable_instances_default_is_not_present(tmp_path):
    """facebookresearch/flow_matching: `loss_scaler(loss, optimizer, parameters=...)` leaves
    `clip_grad=None`, so NativeScaler.__call__ never clips; was a wrong pass (present)."""
    got = verdicts(tmp_path, SCALER_LOOP)
    assert got["clipping"] != "present"
    clipped = SCALER_LOOP.replace("parameters=model.parameters())", "clip_grad=1.0, parameters=model.parameters())")
    assert verdicts(tmp_path, clipped)["clipping"] == "present"


def test_an_unreadable_schedule_beside_a_constant_one_is_unknown_not_present(tmp_path):
    """flow_matching: LinearLR(end_factor=1e-8 / args.lr) under a flag, else ConstantLR: was present."""
    assert verdicts(tmp_path, SCALER_LOOP)["lr-schedule"] != "present"
    unread = SCALER_LOOP.replace("end_factor=1e-8 / args.lr", "end_factor=floor_of(args)")
    assert verdicts(tmp_path, unread)["lr-schedule"] == "unknown"


def test_a_perceptual_module_with_no_use_in_the_training_loss_is_not_a_perceptual_loss(tmp_path):
    """lucidrains/DALLE2-pytorch: an LPIPS metric built to evaluate samples made the LPIPS verdict
    present (a wrong pass); only a use in the training loss counts."""
    evaluated = FLOW.replace(
        "import torch\n",
        "import torch\nimport lpips\n\n\ndef evaluate(samples, real):\n"
        "    metric = lpips.LPIPS(net='vgg')\n    return samples, real, metric\n",
        1,
    )
    assert verdicts(tmp_path, evaluated)["lpips"] != "present"
    used = FLOW.replace(
        "        loss = ((z1 - x - vtheta) ** 2).mean(dim=list(range(1, len(x.shape))))\n",
        "        loss = ((z1 - x - vtheta) ** 2).mean(dim=list(range(1, len(x.shape))))\n"
        "        loss = loss + 0.1 * perceptual(zt - texp * vtheta, x).mean()\n",
    ).replace("import torch\n", "import torch\nimport lpips\n\nperceptual = lpips.LPIPS(net='vgg')\n", 1)
    assert verdicts(tmp_path, used)["lpips"] == "present"
