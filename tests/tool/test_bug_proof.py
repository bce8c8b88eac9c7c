"""A `bug` needs a traced proof. Condensed from false bugs seen on public trainers: each of these
was reported as a bug before, and the right answer is no bug (the rule cannot prove one)."""

import tempfile
from pathlib import Path

from optimizer_tool.testing import findings_for


def codes(source: str) -> set[str]:
    with tempfile.TemporaryDirectory() as folder:
        return {f.code for f in findings_for(source, Path(folder))}


# A diffusers-style loop that creates an EMA and never updates it; the cases below add an update.
NEVER_UPDATED = """\
import copy
import torch
from diffusers import DDPMScheduler

model = torch.nn.Linear(4, 4)
ema = copy.deepcopy(model)
sched = DDPMScheduler()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
for x in loader:
    loss = model(sched.add_noise(x, torch.randn_like(x), 10)).mean()
    loss.backward()
    opt.step()
"""

HAND_WRITTEN_LERP = NEVER_UPDATED + (
    "    with torch.no_grad():\n"
    "        for e, p in zip(ema.parameters(), model.parameters()):\n"
    "            e.lerp_(p, 1e-3)\n"
)

HELPER_ELSEWHERE = "from mypkg.utils import step_ema\n" + NEVER_UPDATED + "    step_ema(ema, model)\n"

# DiT-style: create_diffusion and the project's update_ema helper.
DIT_HEAD = """\
import copy
import torch
from diffusion import create_diffusion
from models import update_ema

model = torch.nn.Linear(4, 4)
ema = copy.deepcopy(model)
diffusion = create_diffusion(timestep_respacing="")
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
"""

ONE_OFF_INIT = (
    DIT_HEAD
    + """\
for epoch in range(10):
    update_ema(ema, model, decay=0)
    for i, x in enumerate(loader):
        loss = diffusion.training_losses(model, x, t)["loss"].mean()
        loss.backward()
        if (i + 1) % 4 == 0:
            opt.step()
            opt.zero_grad()
            update_ema(ema, model)
"""
)

LOSS_STATISTIC = (
    DIT_HEAD
    + """\
loss_ema = None
for i, x in enumerate(loader):
    loss = diffusion.training_losses(model, x, t)["loss"].mean()
    loss.backward()
    loss_ema_meter.update(loss.item())
    if (i + 1) % 4 == 0:
        opt.step()
        opt.zero_grad()
        update_ema(ema, model)
"""
)


def test_an_ema_updated_by_a_hand_written_lerp_loop_is_not_never_updated():
    assert "EMA002" not in codes(HAND_WRITTEN_LERP)


def test_an_ema_handed_to_a_helper_is_not_never_updated():
    assert "EMA002" not in codes(HELPER_ELSEWHERE)


def test_an_ema_nobody_touches_is_still_never_updated():
    assert "EMA002" in codes(NEVER_UPDATED)


def test_the_one_off_decay_zero_copy_is_not_a_per_micro_step_update():
    assert "EMA003" not in codes(ONE_OFF_INIT)


def test_an_average_of_the_loss_is_not_a_weight_ema():
    assert "EMA003" not in codes(LOSS_STATISTIC)


CODEBOOK_EMA = {
    "train.py": """\
import torch
from quantize import EMAVectorQuantizer

model = torch.nn.Linear(4, 4)
quantizer = EMAVectorQuantizer(512, 64)
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
for x in loader:
    loss = model(x).mean()
    loss.backward()
    opt.step()
    torch.save({"model": model.state_dict()}, "last.ckpt")
""",
    "quantize.py": """\
import torch


class EmbeddingEMA(torch.nn.Module):
    def __init__(self, num_tokens, dim, decay=0.99):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(num_tokens, dim))


class EMAVectorQuantizer(torch.nn.Module):
    def __init__(self, num_tokens, dim):
        super().__init__()
        self.embedding = EmbeddingEMA(num_tokens, dim)
""",
}


def test_an_ema_of_a_codebook_is_not_an_ema_of_the_weights():
    """VQGAN's EmbeddingEMA averages codebook vectors; checkpoints without it are no EMA006 bug."""
    assert not {"EMA006", "EMA002"} & codes(CODEBOOK_EMA)


SAMPLES_IN_EMA_SCOPE = """\
import torch
from diffusers import DDPMScheduler
from ema_pytorch import EMA


class Trainer:
    def __init__(self, model):
        self.model = model
        self.ema = EMA(model, beta=0.999)
        self.sched = DDPMScheduler()
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def sample(self, n):
        with self.ema:
            return self.model(torch.randn(n, 4))

    def train(self, loader):
        for x in loader:
            loss = self.model(self.sched.add_noise(x, torch.randn_like(x), 10)).mean()
            loss.backward()
            self.opt.step()
            self.ema.update()
            images = self.sample(4)
"""


def test_sampling_inside_the_ema_context_is_sampling_with_the_ema():
    assert "EMA008" not in codes(SAMPLES_IN_EMA_SCOPE)
    ldm = SAMPLES_IN_EMA_SCOPE.replace("with self.ema:", "with self.ema_scope():")
    assert "EMA008" not in codes(ldm)


SAMPLE_BUDGET = """\
import copy
import torch
from diffusers import DDPMScheduler

model = torch.nn.Linear(4, 4)
ema = copy.deepcopy(model)
sched = DDPMScheduler()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)


def samples_per_batch(batch_size, world_size):
    return model(torch.zeros(batch_size // world_size, 4)).shape[0]


for x in loader:
    loss = model(sched.add_noise(x, torch.randn_like(x), 10)).mean()
    loss.backward()
    opt.step()
    ema.load_state_dict(model.state_dict())
    budget = samples_per_batch(64, 8)
"""


def test_a_batch_size_helper_named_sample_is_not_image_sampling():
    assert "EMA008" not in codes(SAMPLE_BUDGET)


# Palette: a generic save helper is handed the EMA network by its caller.
SAVE_HELPER = """\
import copy
import torch
from diffusers import DDPMScheduler


class Model:
    def __init__(self, net):
        self.netG = net
        self.netG_EMA = copy.deepcopy(net)
        self.opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        self.sched = DDPMScheduler()

    def save_network(self, network, label):
        torch.save(network.state_dict(), f"{label}.pth")

    def save_everything(self):
        self.save_network(self.netG, "G")
        self.save_network(self.netG_EMA, "G_ema")

    def train_step(self, x):
        loss = self.netG(self.sched.add_noise(x, torch.randn_like(x), 10)).mean()
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            for e, p in zip(self.netG_EMA.parameters(), self.netG.parameters()):
                e.lerp_(p, 1e-3)
"""

# U-ViT: sampling goes through an EMA-named wrapper the facts do not hold.
SAMPLE_THROUGH_WRAPPER = """\
import copy
import torch
from diffusers import DDPMScheduler

nnet = torch.nn.Linear(4, 4)
nnet_ema = copy.deepcopy(nnet)
optimizer = torch.optim.AdamW(nnet.parameters(), lr=1e-4)
sched = DDPMScheduler()
score_model_ema = ScoreModel(nnet_ema)


def sample_images(n):
    return sampler.sample(ReverseSDE(score_model_ema), torch.randn(n, 4))


for x in loader:
    loss = nnet(sched.add_noise(x, torch.randn_like(x), 10)).mean()
    loss.backward()
    optimizer.step()
    ema(nnet_ema, nnet, 0.9999)
sample_images(16)
"""


def test_a_save_helper_handed_the_ema_by_its_caller_is_no_bug():
    assert "EMA006" not in codes(SAVE_HELPER)


def test_sampling_through_an_ema_named_wrapper_is_no_bug():
    assert "EMA008" not in codes(SAMPLE_THROUGH_WRAPPER)
    # the same sampler running the live network is the bug
    assert "EMA008" in codes(SAMPLE_THROUGH_WRAPPER.replace("ReverseSDE(score_model_ema)", "ReverseSDE(nnet)"))
