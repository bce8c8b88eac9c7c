"""Shapes of public trainers from the seventh held-out set (validation/heldout7) that ``check`` got
wrong at first sight: a training-loop module checked on its own whose objective the importing
script builds (DETR's ``engine.py``, StyleGAN3's ``training_loop.py``, ACTOR's ``trainer.py``), and
a GAN whose augmentation draws a noise level at random (StyleGAN3's ``augment.py``)."""

from __future__ import annotations

from optimizer_tool.testing import unit_verdicts as verdicts

DIFFUSION_KEYS = ("cosine", "offset", "zero-snr", "vpred", "lpips", "resolution")

# DETR: the loop takes the model and the criterion from its caller
ENGINE = """\
import torch


def train_one_epoch(model, criterion, data_loader, optimizer, device, max_norm: float = 0):
    model.train()
    for samples, targets in data_loader:
        outputs = model(samples)
        loss_dict = criterion(outputs, targets)
        losses = sum(loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
"""

# the script that builds them: a detector trained with cross-entropy
DETECTOR_MAIN = """\
import argparse

import torch
import torch.nn.functional as F

from engine import train_one_epoch


class SetCriterion(torch.nn.Module):
    def forward(self, outputs, targets):
        return {"loss_ce": F.cross_entropy(outputs, targets)}


def main(args):
    model = torch.nn.Linear(4, 4)
    criterion = SetCriterion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        train_one_epoch(model, criterion, [], optimizer, "cpu", args.clip_max_norm)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--clip_max_norm", type=float, default=0.1)
    main(parser.parse_args())
"""

# the same loop run by a denoising script: the objective is the caller's, decided there
DIFFUSION_MAIN = """\
import argparse

import torch
import torch.nn.functional as F

from engine import train_one_epoch


class NoiseCriterion(torch.nn.Module):
    def forward(self, model, x):
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (x.shape[0],))
        return {"mse": F.mse_loss(model(x + noise, t), noise)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    train_one_epoch(model, NoiseCriterion(), [], optimizer, "cpu")
"""


def test_a_loop_module_is_no_diffusion_trainer_when_its_script_trains_a_detector(tmp_path):
    found = verdicts(tmp_path, {"engine.py": ENGINE, "main.py": DETECTOR_MAIN}, entry="engine.py")
    # was decided-elsewhere for every diffusion key: the module alone only receives its criterion
    for key in DIFFUSION_KEYS:
        assert found[key]["state"] == "n/a", (key, found[key])
    assert found["ema"]["state"] == "missing"


def test_a_loop_module_stays_undecided_alone_and_under_a_diffusion_script(tmp_path):
    alone = verdicts(tmp_path / "alone", {"engine.py": ENGINE}, entry="engine.py")
    assert {alone[k]["state"] for k in DIFFUSION_KEYS} == {"decided-elsewhere"}
    diffusion = verdicts(tmp_path / "ddpm", {"engine.py": ENGINE, "main.py": DIFFUSION_MAIN}, entry="engine.py")
    assert "n/a" not in {diffusion[k]["state"] for k in DIFFUSION_KEYS}


# a script that only mentions the module's name, and a test importing it, run nothing of it
def test_only_a_runnable_importer_decides(tmp_path):
    mention = DETECTOR_MAIN.replace("from engine import train_one_epoch", "# see engine.py")
    mention = mention.replace("train_one_epoch(model", "print(model")
    found = verdicts(tmp_path, {"engine.py": ENGINE, "main.py": mention}, entry="engine.py")
    assert found["cosine"]["state"] == "decided-elsewhere"


# StyleGAN3: ADA augmentation draws ``sigma`` at random next to ``randn``; the loss is adversarial
STYLEGAN = """\
import torch
import torch.nn.functional as F


class AugmentPipe(torch.nn.Module):
    def forward(self, images):
        sigma = torch.randn([images.shape[0], 1, 1, 1]).abs() * 0.1
        return images + torch.randn_like(images) * sigma


G = torch.nn.Linear(4, 4)
D = torch.nn.Linear(4, 1)
augment_pipe = AugmentPipe()
opt_G = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0, 0.99))
for real in loader:
    gen_logits = D(augment_pipe(G(torch.randn(8, 4))))
    loss_G = F.softplus(-gen_logits).mean()
    opt_G.zero_grad()
    loss_G.backward()
    opt_G.step()
"""


def test_augmentation_noise_is_no_diffusion_beside_an_adversarial_loss(tmp_path):
    found = verdicts(tmp_path, {"train.py": STYLEGAN})
    # was a diffusion trainer ("samples noise and noise levels (sigma)"): cosine unknown, lpips missing
    for key in DIFFUSION_KEYS:
        assert found[key]["state"] == "n/a", (key, found[key])
    plain = STYLEGAN.replace("gen_logits", "out").replace("loss_G", "loss")
    assert verdicts(tmp_path / "plain", {"train.py": plain})["cosine"]["state"] != "n/a"
