"""Training-loop rules (lr-schedule, lpips, clipping, monitoring) beyond their own VALID/INVALID
examples: real-world spellings of public trainers (diffusers examples, DiT, improved-diffusion,
lucidrains, k-diffusion, nanoGPT, Lightning), things that must never count (noise-scheduler steps,
comments, print), the reference trainer and the fixtures' ground truth."""

from pathlib import Path

import pytest

from optimizer_tool.engine import run_check
from optimizer_tool.settings import Settings
from optimizer_tool.testing import findings_for

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("lr-schedule", "lpips", "clipping", "monitoring")
FIXTURES = ROOT / "fixtures" / "trainers"


def codes(example, tmp_path) -> set[str]:
    return {f.code for f in findings_for(example, tmp_path) if f.key in KEYS}


def folder_codes(path: Path) -> dict[str, list]:
    result, _ = run_check([path], Settings(only=KEYS))
    found: dict[str, list] = {}
    for f in result.findings:
        if f.key in KEYS:
            found.setdefault(f.code, []).append(f)
    return found


# --- lr-schedule ---------------------------------------------------------------------------
def test_noise_scheduler_step_is_not_an_lr_step(tmp_path):
    src = """\
import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
scheduler = DDPMScheduler(num_train_timesteps=1000)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=500, num_training_steps=len(loader) * epochs)
for epoch in range(epochs):
    x = torch.randn(4, 3, 32, 32)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    for batch in loader:
        loss = model(batch)
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
"""  # noqa: E501
    found = codes(src, tmp_path)
    assert not found & {"LR001", "LR005", "LR006"}


def test_warmup_fraction_unknown_when_total_comes_from_the_dataloader(tmp_path):
    src = """\
import argparse, math, torch
from diffusers.optimization import get_scheduler
p = argparse.ArgumentParser()
p.add_argument('--max_train_steps', type=int, default=None)
p.add_argument('--lr_warmup_steps', type=int, default=500)
args = p.parse_args()
num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
if args.max_train_steps is None:
    args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
lr_scheduler = get_scheduler('cosine', optimizer=opt, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps)
for batch in loader:
    loss = unet(batch)
    loss.backward()
    opt.step()
    lr_scheduler.step()
"""  # noqa: E501
    assert "LR004" not in codes(src, tmp_path)


def test_warmup_capped_at_ten_percent_is_fine(tmp_path):
    src = """\
import torch
from torch.optim.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR
total_steps = 10000
warmup_steps = min(2000, total_steps // 10)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
warm = LinearLR(opt, start_factor=0.001, total_iters=warmup_steps)
cos = CosineAnnealingLR(opt, T_max=total_steps - warmup_steps, eta_min=1e-6)
sched = SequentialLR(opt, [warm, cos], milestones=[warmup_steps])
for x in data:
    loss = model(x)
    loss.backward()
    opt.step()
    sched.step()
"""
    assert not codes(src, tmp_path) & {"LR001", "LR002", "LR003", "LR004", "LR007"}


def test_lightning_interval_step_is_fine_and_default_epoch_is_not(tmp_path):
    base = """\
import torch
import lightning as L
from transformers import get_cosine_schedule_with_warmup
class Lit(L.LightningModule):
    def training_step(self, batch, i):
        return self.model(batch)
    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-4)
        sched = get_cosine_schedule_with_warmup(opt, 500, self.trainer.estimated_stepping_batches)
        return {RET}
"""
    good = base.replace("{RET}", '{"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}')
    bad = base.replace("{RET}", '{"optimizer": opt, "lr_scheduler": sched}')
    assert "LR005" not in codes(good, tmp_path / "good")
    assert "LR005" in codes(bad, tmp_path / "bad")


def test_lightning_scheduler_built_dynamically_counts_as_a_schedule(tmp_path):
    src = """\
import torch
import pytorch_lightning as pl
class Lit(pl.LightningModule):
    def training_step(self, batch, batch_idx):
        return self.model(batch)
    def configure_optimizers(self):
        optimizer = eval(self.optimizer_args["class"])(self.parameters(), **self.optimizer_args["class_args"])
        out = {"optimizer": optimizer}
        scheduler = eval(self.scheduler_args["class"])(optimizer, **self.scheduler_args["class_args"])
        out["lr_scheduler"] = {"scheduler": scheduler, "interval": "epoch"}
        return out
"""
    assert "LR001" not in codes(src, tmp_path)


def test_nanogpt_manual_schedule(tmp_path):
    src = """\
import math, torch
def get_lr(it):
    if it < warmup_iters:
        return learning_rate * it / warmup_iters
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)
optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4)
while True:
    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr
    loss = model(X, Y)
    loss.backward()
    optimizer.step()
"""
    assert not codes(src, tmp_path) & {"LR001", "LR002", "LR006", "LR007"}


IMPROVED_DIFFUSION = """\
import torch
from torch.optim import AdamW
class TrainLoop:
    def __init__(self, *, model, lr, lr_anneal_steps=0):
        self.lr = lr
        self.lr_anneal_steps = lr_anneal_steps
        self.opt = AdamW(model.parameters(), lr=self.lr)
    def _anneal_lr(self):
        if not self.lr_anneal_steps:
            return
        frac_done = (self.step + self.resume_step) / self.lr_anneal_steps
        lr = self.lr * (1 - frac_done)
        for param_group in self.opt.param_groups:
            param_group["lr"] = lr
    def optimize_normal(self):
        self._anneal_lr()
        self.opt.step()
    def forward_backward(self, batch):
        loss = self.model(batch)
        loss.backward()
"""


def test_improved_diffusion_anneal(tmp_path):
    # the TrainLoop alone: lr_anneal_steps=0 is a parameter default, whoever builds the loop decides
    off = codes(IMPROVED_DIFFUSION, tmp_path / "off")
    assert not off & {"LR001", "LR002", "LR003", "LR006", "LR007"}
    # the script's defaults say 0: the anneal is off, so a default run trains at a constant rate
    # (LR001), and nothing is said about the shape of an anneal that does not run
    script = codes(IMPROVED_DIFFUSION + "defaults = dict(lr=1e-4, lr_anneal_steps=0)\n", tmp_path / "script")
    assert "LR001" in script
    assert not script & {"LR002", "LR003", "LR006", "LR007"}
    # a run that sets it: linear decay to 0 without warm-up
    on = IMPROVED_DIFFUSION + "defaults = dict(lr=1e-4, lr_anneal_steps=300000)\n"
    assert "LR007" in codes(on, tmp_path / "on")
    assert not codes(on, tmp_path / "on2") & {"LR001", "LR002", "LR006"}


def test_k_diffusion_style_schedule_class_counts(tmp_path):
    src = """\
import torch
from torch import optim
import k_diffusion as K
opt = optim.AdamW(model.parameters(), lr=1e-4)
sched = K.utils.InverseLR(opt, inv_gamma=sched_config['inv_gamma'], power=sched_config['power'], warmup=sched_config['warmup'])
for batch in dl:
    loss = model.loss(batch)
    loss.backward()
    opt.step()
    sched.step()
"""  # noqa: E501
    assert not codes(src, tmp_path) & {"LR001", "LR002", "LR003", "LR007"}


def test_schedule_in_a_comment_does_not_count(tmp_path):
    src = """\
import torch
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
# sched = get_cosine_schedule_with_warmup(opt, 500, 10000)
SNIPPET = "lr_scheduler = get_scheduler('cosine', optimizer=opt)"
for x in data:
    loss = model(x)
    loss.backward()
    opt.step()
"""
    assert "LR001" in codes(src, tmp_path)


def test_epoch_schedule_stepped_per_epoch_is_fine(tmp_path):
    src = """\
import torch
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs, eta_min=1e-6)
def train_one_epoch(loader):
    for x in loader:
        loss = model(x)
        loss.backward()
        opt.step()
for epoch in range(args.epochs):
    train_one_epoch(loader)
    sched.step()
"""
    assert "LR005" not in codes(src, tmp_path)


def test_per_step_schedule_stepped_after_train_one_epoch(tmp_path):
    src = """\
import torch
from transformers import get_linear_schedule_with_warmup
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=args.epochs * len(loader))
def train_one_epoch(loader):
    for x in loader:
        loss = model(x)
        loss.backward()
        opt.step()
for epoch in range(args.epochs):
    train_one_epoch(loader)
    sched.step()
"""
    assert "LR005" in codes(src, tmp_path)


# --- lpips ---------------------------------------------------------------------------------
def test_lpips_metric_in_validation_is_not_a_training_bug(tmp_path):
    src = """\
import torch, lpips
import torch.nn.functional as F
lpips_fn = lpips.LPIPS(net='alex')
@torch.no_grad()
def validate(samples, images):
    return lpips_fn(samples, images).mean()
for x0, noise in loader:
    noise_pred = model(x0 + noise)
    loss = F.mse_loss(noise_pred, noise)
    loss.backward()
    optimizer.step()
"""
    found = codes(src, tmp_path)
    assert not found & {"LPIPS002", "LPIPS003"}
    # a metric is no loss term: the training loss is still MSE only
    assert "LPIPS001" in found


def test_lpips_on_pred_original_sample_is_fine(tmp_path):
    src = """\
import torch, lpips
import torch.nn.functional as F
perceptual = lpips.LPIPS(net='vgg').eval().requires_grad_(False)
for images in loader:
    noise = torch.randn_like(images)
    noisy = scheduler.add_noise(images, noise, t)
    model_pred = unet(noisy, t).sample
    x0 = scheduler.step(model_pred, t, noisy).pred_original_sample
    loss = F.mse_loss(model_pred, noise) + 0.1 * perceptual(x0, images).mean()
    loss.backward()
    optimizer.step()
"""
    assert not codes(src, tmp_path) & {"LPIPS002", "LPIPS003", "LPIPS004", "LPIPS005"}


def test_lpips_on_detached_prediction(tmp_path):
    src = """\
import torch, lpips
import torch.nn.functional as F
perceptual = lpips.LPIPS(net='vgg')
for images in loader:
    x0_pred = predict_x0(model(images), images)
    lp = perceptual(x0_pred.detach(), images).mean()
    loss = F.mse_loss(x0_pred, images) + 0.1 * lp
    loss.backward()
    optimizer.step()
"""
    assert "LPIPS002" in codes(src, tmp_path)


def test_lpips_diffusers_v_target(tmp_path):
    src = """\
import torch, lpips
import torch.nn.functional as F
lpips_model = lpips.LPIPS(net='vgg')
for batch in loader:
    latents = batch['pixel_values']
    noise = torch.randn_like(latents)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    target = noise_scheduler.get_velocity(latents, noise, timesteps)
    model_pred = unet(noisy, timesteps).sample
    loss = F.mse_loss(model_pred, target) + 0.1 * lpips_model(model_pred, target).mean()
    loss.backward()
    optimizer.step()
"""
    assert "LPIPS003" in codes(src, tmp_path)


def test_lpips_x0_prediction_model_output_is_an_image(tmp_path):
    src = """\
import torch, lpips
import torch.nn.functional as F
prediction_type = "sample"
lpips_fn = lpips.LPIPS(net='vgg')
for x0 in loader:
    noise = torch.randn_like(x0)
    model_output = model(x0 + noise)
    loss = F.mse_loss(model_output, x0) + 0.1 * lpips_fn(model_output, x0).mean()
    loss.backward()
    optimizer.step()
"""
    assert "LPIPS003" not in codes(src, tmp_path)


def test_lpips_frames_folded_with_flatten_is_fine(tmp_path):
    src = """\
import torch, lpips
import torch.nn.functional as F
num_frames = 16
lpips_fn = lpips.LPIPS(net='vgg')
for videos in loader:
    noise = torch.randn_like(videos)
    pred = model(videos + noise)
    x0_pred = (videos + noise - (1 - alpha) ** 0.5 * pred) / alpha ** 0.5
    b, c, t, h, w = videos.shape
    p = x0_pred.transpose(1, 2).reshape(b * t, c, h, w)
    q = videos.transpose(1, 2).reshape(b * t, c, h, w)
    loss = F.mse_loss(pred, noise) + 0.1 * lpips_fn(p, q).mean()
    loss.backward()
    optimizer.step()
"""
    assert "LPIPS005" not in codes(src, tmp_path)


def test_torchmetrics_normalize_flag(tmp_path):
    src = """\
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
metric = LearnedPerceptualImagePatchSimilarity(net_type='vgg', normalize=True)
def validate(samples, images):
    return metric((samples + 1) / 2, (images + 1) / 2)
for x in data:
    loss = model(x)
    loss.backward()
    opt.step()
"""
    assert "LPIPS004" not in codes(src, tmp_path)


# --- clipping ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spelling",
    [
        "import torch\nCLIP = lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n",
        "from torch.nn.utils import clip_grad_norm_\nCLIP = lambda: clip_grad_norm_(model.parameters(), 1.0)\n",
        "from torch import nn\nCLIP = lambda: nn.utils.clip_grad_value_(model.parameters(), 0.5)\n",
        "import torch.nn as nn\nCLIP = lambda: nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n",
        "CLIP = lambda: accelerator.clip_grad_norm_(model.parameters(), 1.0)\n",
        "CLIP = lambda: fabric.clip_gradients(model, optimizer, max_norm=1.0)\n",
    ],
)
def test_clipping_spellings(spelling, tmp_path):
    src = spelling + "for x in data:\n    loss = model(x)\n    loss.backward()\n    CLIP()\n    optimizer.step()\n"
    assert "CLIP001" not in codes(src, tmp_path)


def test_clipping_in_comment_does_not_count(tmp_path):
    src = (
        "import torch\n"
        "for x in data:\n"
        "    loss = model(x)\n"
        "    loss.backward()\n"
        "    # torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "    optimizer.step()\n"
    )
    assert "CLIP001" in codes(src, tmp_path)


def test_clip_threshold_one_or_half_is_never_flagged(tmp_path):
    for value in ("1.0", "0.5"):
        src = (
            "import torch\n"
            f"max_grad_norm = {value}\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)\n"
            "    optimizer.step()\n"
        )
        assert not codes(src, tmp_path / value) & {"CLIP001", "CLIP002", "CLIP003", "CLIP004"}


def test_mae_style_loss_scaler_with_clip_grad(tmp_path):
    src = (
        "import torch\n"
        "for x in data:\n"
        "    loss = model(x)\n"
        "    loss.backward()\n"
        "    loss_scaler(loss, optimizer, clip_grad=args.clip_grad, parameters=model.parameters())\n"
        "    optimizer.step()\n"
    )
    assert "CLIP001" not in codes(src, tmp_path)


def test_lightning_module_alone_is_not_judged_for_clipping_but_for_its_own_logging(tmp_path):
    """Clipping is a Trainer option (built elsewhere: decided elsewhere); the gradient norm is logged
    by the module itself (Lightning 2 has no Trainer flag for it): MON001 with the Lightning recipe."""
    src = (
        "import torch\n"
        "import lightning as L\n"
        "class Lit(L.LightningModule):\n"
        "    def training_step(self, batch, i):\n"
        "        return self.model(batch)\n"
        "    def configure_optimizers(self):\n"
        "        return torch.optim.AdamW(self.parameters(), lr=1e-4)\n"
    )
    found = {f.code: f for f in findings_for(src, tmp_path)}
    assert "CLIP001" not in found
    assert "on_before_optimizer_step" in found["MON001"].message


def test_lightning_yaml_gradient_clip_val(tmp_path):
    example = {
        "train.py": (
            "import torch\n"
            "import lightning as L\n"
            "class Lit(L.LightningModule):\n"
            "    def training_step(self, batch, i):\n"
            "        return self.model(batch)\n"
            "trainer = L.Trainer(max_epochs=config['trainer']['max_epochs'])\n"
        ),
        "config.yaml": "trainer:\n  max_epochs: 10\n  gradient_clip_val: 1.0\n",
    }
    assert "CLIP001" not in codes(example, tmp_path)


# --- monitoring ----------------------------------------------------------------------------
def test_print_counts_as_logging_only_without_a_tracker(tmp_path):
    """A trainer whose only log is its progress line logs the gradient norm by printing it each step
    (logger.info, print: what DiT and the tutorial loops do); with a tracker the curve belongs there."""
    src = (
        "import torch\n"
        "for x in data:\n"
        "    loss = model(x)\n"
        "    loss.backward()\n"
        "    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "    optimizer.step()\n"
        "    print(f'loss={loss.item()} grad_norm={grad_norm}')\n"
    )
    assert "MON001" not in codes(src, tmp_path)
    with_tracker = src + "    writer.add_scalar('loss', loss.item(), step)\n"
    assert "MON001" in codes(with_tracker, tmp_path / "tracker")
    once = (
        src.replace("    print(f'loss={loss.item()} grad_norm={grad_norm}')\n", "")
        + "print(f'grad_norm={grad_norm}')\n"
    )
    assert "MON001" in codes(once, tmp_path / "once")  # printed once after training: not a curve


def test_grad_norm_through_a_logging_helper(tmp_path):
    src = """\
import torch, wandb
def log_metrics(metrics, step):
    wandb.log(metrics, step=step)
for step, x in enumerate(data):
    loss = model(x)
    loss.backward()
    total_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    log_metrics({"loss": loss.item(), "grad_norm": total_norm.item()}, step)
"""
    assert "MON001" not in codes(src, tmp_path)


def test_lightning_grad_norm_and_lr_monitor(tmp_path):
    src = """\
import torch
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import grad_norm
class Lit(L.LightningModule):
    def training_step(self, batch, i):
        return self.model(batch)
    def on_before_optimizer_step(self, optimizer):
        self.log_dict(grad_norm(self.model, norm_type=2))
    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
        return [opt], [sched]
trainer = L.Trainer(max_epochs=10, gradient_clip_val=1.0, callbacks=[LearningRateMonitor(logging_interval='step')])
"""
    found = codes(src, tmp_path)
    assert not found & {"MON001", "MON002"}


def test_lr_not_judged_without_a_schedule(tmp_path):
    src = (
        "import torch\n"
        "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
        "for x in data:\n"
        "    loss = model(x)\n"
        "    loss.backward()\n"
        "    opt.step()\n"
    )
    assert "MON002" not in codes(src, tmp_path)


def test_ema_drift_only_with_an_ema(tmp_path):
    src = "import torch\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    optimizer.step()\n"
    assert "MON003" not in codes(src, tmp_path)


# --- the reference trainer and the fixtures --------------------------------------------------
def test_reference_trainer_exact():
    found = folder_codes(ROOT / "reference_trainer")
    assert set(found) == {"LPIPS001", "LR003", "MON001"}, {c: [str(f.location) for f in fs] for c, fs in found.items()}


# code -> must be reported / must not be reported, from each fixture's INTENT.md (keys of these rules only)
FIXTURE_TRUTH = {
    "comments_only": ({"LR001", "LPIPS001", "CLIP001", "MON001"}, set()),
    "diffusers_accelerate": (
        {"LR004", "LPIPS001", "MON001", "MON002", "MON003"},
        {"LR005", "LR006", "CLIP001", "CLIP002", "CLIP003"},
    ),
    "dit_style": ({"LR001", "LPIPS001", "CLIP001", "MON001", "MON003"}, set()),
    "fully_optimized": (
        set(),
        {
            "LR001",
            "LR002",
            "LR003",
            "LR004",
            "LR005",
            "LR006",
            "LR007",
            "LR008",
            "LPIPS001",
            "LPIPS002",
            "LPIPS003",
            "LPIPS004",
            "LPIPS005",
            "CLIP001",
            "CLIP002",
            "CLIP003",
            "CLIP004",
            "MON001",
            "MON002",
            "MON003",
        },
    ),
    "lightning_module": ({"LR005", "LPIPS001", "MON003"}, {"CLIP001", "MON001", "MON002"}),
    "lucidrains_trainer": ({"LR001", "LPIPS001", "MON001", "MON003"}, {"CLIP001", "CLIP002", "CLIP003"}),
    # LR007 (no warm-up) needs lr_anneal_steps=300000 from scripts/image_train.py, which the engine does not yet
    # put in the loop's unit; see test_improved_diffusion_anneal for the rule itself.
    "openai_trainloop": ({"CLIP001", "MON002", "MON003"}, {"LR002", "LR006", "MON001"}),
    "plain_amp_loop": ({"LR006", "CLIP002", "LPIPS001", "MON003"}, {"LR004", "MON001", "MON002"}),
    "plan_snippets": (
        {"LPIPS002", "LPIPS003", "LPIPS004"},
        {
            "LPIPS005",
            "LR001",
            "LR002",
            "LR004",
            "LR005",
            "LR006",
            "CLIP001",
            "CLIP002",
            "CLIP003",
            "MON001",
            "MON002",
            "MON003",
        },
    ),
    "smoke_diverging_lr": ({"LR008", "LPIPS001", "CLIP001", "MON001"}, {"LR002"}),
    "smoke_ema_never_updated": ({"LR001", "LPIPS001", "MON001", "MON003"}, {"CLIP001"}),
    "smoke_nan_loss": ({"LR001", "LPIPS001", "CLIP001", "MON001"}, set()),
    "timm_video_trainer": (
        {"LPIPS005", "CLIP003", "MON003"},
        {"LR001", "LR002", "LR004", "LR005", "LR006", "LPIPS002", "LPIPS003", "LPIPS004", "MON001", "MON002"},
    ),
}


@pytest.mark.parametrize("name", sorted(FIXTURE_TRUTH))
def test_fixture_ground_truth(name):
    folder = FIXTURES / name
    if not folder.is_dir():
        pytest.skip(f"fixture {name} not present")
    must, must_not = FIXTURE_TRUTH[name]
    found = set(folder_codes(folder))
    assert must <= found, f"missing {sorted(must - found)}"
    assert not (must_not & found), f"unexpected {sorted(must_not & found)}"
