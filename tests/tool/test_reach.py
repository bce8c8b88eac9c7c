"""Reach: an entry script reaches its project's package, the trace from it decides which code
runs, configs chosen at run time decide elsewhere. Condensed from real repositories of the
validation set (validation/check/labels): openai improved/guided-diffusion and consistency
models (scripts/ beside the package), ermongroup/ddim (configs/*.yml picked by --config),
AntixK/PyTorch-VAE (a VAE is no diffusion trainer)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.testing import write_example

TRAIN_UTIL = """\
import torch
import lpips
from torch.optim import AdamW


def mean_flat(t):
    return t.mean(dim=list(range(1, len(t.shape))))


class Denoiser:
    def __init__(self, loss_norm="l2"):
        self.lpips_loss = lpips.LPIPS(net="vgg")

    def training_losses(self, model, x_start, noise, t):
        x_t = x_start + noise * t
        return mean_flat((model(x_t, t) - x_start) ** 2)

    def consistency_losses(self, model, x_start, noise, t):
        return self.lpips_loss(model(x_start + noise, t), x_start)


class TrainLoop:
    def __init__(self, model, diffusion, data, lr):
        self.model, self.diffusion, self.data = model, diffusion, data
        self.opt = AdamW(model.parameters(), lr=lr)

    def run_loop(self):
        for batch in self.data:
            self.opt.zero_grad()
            self.forward_backward(batch)
            self.opt.step()

    def forward_backward(self, batch):
        noise = torch.randn_like(batch)
        t = torch.randint(0, 1000, (batch.shape[0],))
        self.diffusion.training_losses(self.model, batch, noise, t).mean().backward()


class CMTrainLoop(TrainLoop):
    def forward_backward(self, batch):
        noise = torch.randn_like(batch)
        t = torch.randint(0, 1000, (batch.shape[0],))
        self.diffusion.consistency_losses(self.model, batch, noise, t).mean().backward()
"""

SCRIPT = """\
import argparse

from mypkg.train_util import {loop}, Denoiser


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    {loop}(model=build(), diffusion=Denoiser(), data=load(), lr=args.lr).run_loop()


if __name__ == "__main__":
    main()
"""


def _write(root: Path, files: dict[str, str]) -> None:
    """The files under ``root``, which setup.py marks as the repository root."""
    write_example({"setup.py": "from setuptools import setup\nsetup(name='mypkg')\n", **files}, root)


def _verdicts(root: Path, target: str) -> dict:
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(root / target)])
    document = json.loads(result.output)
    (unit,) = [u for u in document["units"] if u["entry"].endswith(target)]
    return {key: v["state"] for key, v in unit["verdicts"].items()} | {"_note": unit.get("note", "")}


def test_an_entry_script_in_a_subfolder_reaches_its_package(tmp_path):
    _write(
        tmp_path,
        {
            "mypkg/__init__.py": "",
            "mypkg/train_util.py": TRAIN_UTIL,
            "scripts/train.py": SCRIPT.format(loop="TrainLoop"),
        },
    )
    states = _verdicts(tmp_path, "scripts/train.py")
    assert "no optimizer step found" not in states["_note"]
    assert states["lr-schedule"] == "missing" and states["clipping"] == "missing"


def test_code_the_entry_never_runs_does_not_count(tmp_path):
    """Two scripts share train_util.py: only the one that builds CMTrainLoop trains with LPIPS."""
    _write(
        tmp_path,
        {
            "mypkg/__init__.py": "",
            "mypkg/train_util.py": TRAIN_UTIL,
            "scripts/edm_train.py": SCRIPT.format(loop="TrainLoop"),
            "scripts/cm_train.py": SCRIPT.format(loop="CMTrainLoop"),
        },
    )
    assert _verdicts(tmp_path, "scripts/edm_train.py")["lpips"] == "missing"
    assert _verdicts(tmp_path, "scripts/cm_train.py")["lpips"] == "present"


RUNNER = """\
import torch
from models.ema import EMAHelper


class Diffusion:
    def __init__(self, config):
        self.config = config

    def train(self, model, loader):
        optimizer = torch.optim.Adam(model.parameters(), lr=self.config.optim.lr)
        if self.config.model.ema:
            ema_helper = EMAHelper(mu=self.config.model.ema_rate)
            ema_helper.register(model)
        for x in loader:
            e = torch.randn_like(x)
            t = torch.randint(0, 1000, (x.shape[0],))
            loss = (model(x + e, t) - e).square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if self.config.model.ema:
                ema_helper.update(model)
"""

EMA_HELPER = """\
class EMAHelper:
    def __init__(self, mu=0.999):
        self.mu, self.shadow = mu, {}

    def register(self, module):
        for name, param in module.named_parameters():
            self.shadow[name] = param.data.clone()

    def update(self, module):
        for name, param in module.named_parameters():
            self.shadow[name].data = (1.0 - self.mu) * param.data + self.mu * self.shadow[name].data
"""


def test_a_guard_read_from_configs_picked_at_run_time_is_decided_elsewhere(tmp_path):
    config = "model:\n  ema: {ema}\n  ema_rate: 0.9999\noptim:\n  lr: 0.0002\n"
    files = {
        "runners/__init__.py": "",
        "runners/diffusion.py": RUNNER,
        "models/__init__.py": "",
        "models/ema.py": EMA_HELPER,
        "main.py": (
            "import argparse\nfrom runners.diffusion import Diffusion\n\n"
            "if __name__ == '__main__':\n"
            "    parser = argparse.ArgumentParser()\n"
            "    parser.add_argument('--config', required=True)\n"
            "    Diffusion(load(parser.parse_args().config)).train(build(), data())\n"
        ),
        "configs/cifar10.yml": config.format(ema="true"),
        "configs/celeba.yml": config.format(ema="true"),
    }
    _write(tmp_path, files)
    assert _verdicts(tmp_path, "main.py")["ema"] == "decided-elsewhere"
    # one config beside the trainer is still only one the run may name (--config is required)
    (tmp_path / "configs" / "celeba.yml").unlink()
    assert _verdicts(tmp_path, "main.py")["ema"] == "decided-elsewhere"


DEFAULTS_SCRIPT = """\
import argparse
import torch


def get_named_beta_schedule(schedule_name, steps):
    if schedule_name == "linear":
        return torch.linspace(1e-4, 0.02, steps)
    {cosine}raise NotImplementedError(schedule_name)


def defaults():
    return dict(noise_schedule="linear", lr=1e-4)


def main():
    parser = argparse.ArgumentParser()
    for key, value in defaults().items():
        parser.add_argument(f"--{{key}}", default=value, type=type(value))
    args = parser.parse_args()
    betas = get_named_beta_schedule(args.noise_schedule, 1000)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    for x in loader:
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (x.shape[0],))
        loss = torch.nn.functional.mse_loss(model(x + betas[t] * noise, t), noise)
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
"""


def test_a_defaults_dict_switch_is_off_by_default_only_where_the_code_has_the_branch(tmp_path):
    cosine = 'if schedule_name == "cosine":\n        return cosine_betas(steps)\n    '
    _write(tmp_path, {"image_train.py": DEFAULTS_SCRIPT.format(cosine=cosine)})
    assert _verdicts(tmp_path, "image_train.py")["cosine"] == "off-by-default"
    _write(tmp_path, {"image_train.py": DEFAULTS_SCRIPT.format(cosine="")})
    assert _verdicts(tmp_path, "image_train.py")["cosine"] == "missing"  # no branch for it: code to write


def test_a_vae_posterior_scale_is_no_noise_level(tmp_path):
    vae = """\
import torch
import torch.nn.functional as F

def kernel(x1, x2, z_dim, z_var):
    sigma = 2.0 * z_dim * z_var
    return torch.exp(-((x1 - x2).pow(2).mean(-1) / sigma))

opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for x in loader:
    mu, log_var = model.encode(x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
    loss = F.mse_loss(model.decode(z), x) + kernel(z, torch.randn_like(z), 8, 2.0).mean()
    loss.backward()
    opt.step()
"""
    _write(tmp_path, {"train.py": vae})
    assert _verdicts(tmp_path, "train.py")["cosine"] != "missing"  # no diffusion advice on a VAE


def test_a_repository_check_reads_only_its_training_units_with_libcst(tmp_path):
    """`check .` on a repository: modules no trainer imports get no table and no libcst parse
    (indexing timm's 300 library modules was most of its 131 s)."""
    from optimizer_tool.engine import check_loaded
    from optimizer_tool.project import load
    from optimizer_tool.settings import Settings

    _write(
        tmp_path,
        {
            "mypkg/__init__.py": "",
            "mypkg/train_util.py": TRAIN_UTIL,
            "mypkg/unused_layers.py": "import torch\n\n\nclass Block(torch.nn.Module):\n    pass\n",
            "scripts/train.py": SCRIPT.format(loop="TrainLoop"),
        },
    )
    loaded = load([tmp_path])
    result = check_loaded(loaded, [tmp_path], Settings())
    assert [f.entry.name for f in result.facts] == ["train.py"]
    assert loaded.files[(tmp_path / "mypkg/unused_layers.py").resolve()].parsed is None
    assert loaded.files[(tmp_path / "mypkg/train_util.py").resolve()].parsed is not None


def test_a_file_with_a_byte_order_mark_is_read(tmp_path):
    """Latte's tools/*.py start with a UTF-8 BOM: valid Python, never an input error."""
    _write(tmp_path, {"train.py": "\ufeff" + SCRIPT.format(loop="TrainLoop"), "mypkg/train_util.py": TRAIN_UTIL})
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(tmp_path / "train.py")])
    document = json.loads(result.output)
    assert not [f for f in document["findings"] if f["code"] == "E999"]
    assert document["units"][0]["verdicts"]["lr-schedule"]["state"] == "missing"


def test_a_class_named_by_a_string_is_part_of_the_unit(tmp_path):
    """EDM: `construct_class_by_name(class_name="training.loss.EDMLoss")` brings training/loss.py
    into the unit as an import statement would; strings of known libraries do not."""
    from optimizer_tool.engine import build_units
    from optimizer_tool.project import load

    _write(
        tmp_path,
        {
            "training/__init__.py": "",
            "training/loss.py": "class EDMLoss:\n    def __call__(self, net, images):\n        return net(images)\n",
            "train.py": (
                "import dnnlib\n"
                "loss_fn = dnnlib.util.construct_class_by_name(class_name='training.loss.EDMLoss')\n"
                "dtype = 'torch.float16'\n"
                "for x in data:\n    loss_fn(net, x).sum().backward()\n    opt.step()\n"
            ),
        },
    )
    loaded = load([tmp_path / "train.py"])
    (unit,) = build_units(loaded, [(tmp_path / "train.py").resolve()])
    assert {f.path.name for f in unit.files} == {"train.py", "loss.py"}


PALETTE_MODEL = """\
import copy
import torch


class Model:
    def __init__(self, networks, optimizers, ema_scheduler=None):
        self.netG = networks[0]
        self.optG = torch.optim.Adam(self.netG.parameters(), **optimizers[0])
        if ema_scheduler is not None:
            self.netG_EMA = copy.deepcopy(self.netG)

    def train_step(self, batch):
        self.optG.zero_grad()
        loss = self.netG(batch)
        loss.backward()
        self.optG.step()
"""


def test_a_class_built_from_a_config_takes_no_parameter_default_as_the_default(tmp_path):
    """Palette's run.py builds Model by name from its JSON config, which passes ema_scheduler: the
    parameter's None is no default of that run (off-by-default would be a wrong confident answer);
    the class checked on its own keeps its default. netG alone is no sign of a GAN: without a
    visible objective the unit is undecided."""
    run = (
        "import json\nfrom core.praser import init_obj\n\n"
        "if __name__ == '__main__':\n"
        "    opt = json.load(open('config/train.json'))\n"
        "    model = init_obj(opt['model'], default_file_name='models.model', init_type='Model')\n"
        "    for batch in data:\n        model.train_step(batch)\n"
    )
    _write(
        tmp_path,
        {
            "models/__init__.py": "",
            "models/model.py": PALETTE_MODEL,
            "core/__init__.py": "",
            "core/praser.py": "",
            "run.py": run,
        },
    )
    states = _verdicts(tmp_path, "run.py")
    assert states["ema"] == "present"
    assert states["cosine"] == "unknown"  # undecided, not n/a for "not a diffusion trainer"
    assert _verdicts(tmp_path, "models/model.py")["ema"] == "off-by-default"  # the class on its own


# --- a Lightning launcher: main.py builds the model a YAML config names (CompVis latent-diffusion,
# taming-transformers): `python main.py --base configs/x.yaml` trains through a LightningModule ---
LAUNCHER = """\
import argparse
import importlib

import pytorch_lightning as pl
from omegaconf import OmegaConf


def instantiate_from_config(config):
    module, cls = config["target"].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)(**config.get("params", {}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", nargs="*", default=[])
    opt, unknown = parser.parse_known_args()
    config = OmegaConf.merge(*[OmegaConf.load(c) for c in opt.base])
    model = instantiate_from_config(config.model)
    trainer = pl.Trainer.from_argparse_args(opt)
    trainer.fit(model, data)
"""

DIFFUSION_MODULE = """\
import torch
import pytorch_lightning as pl
import torch.nn.functional as F
from ema_pytorch import EMA


def make_beta_schedule(schedule, n):
    if schedule == "linear":
        return torch.linspace(1e-4, 0.02, n)
    elif schedule == "cosine":
        return torch.cos(torch.linspace(0, 1, n))
    raise ValueError(schedule)


class DDPM(pl.LightningModule):
    def __init__(self, unet_config, beta_schedule="linear", parameterization="eps", use_ema=True):
        super().__init__()
        assert parameterization in ["eps", "x0"]
        self.parameterization = parameterization
        self.betas = make_beta_schedule(beta_schedule, 1000)
        self.model_ema = EMA(self.model, beta=0.9999)

    def on_train_batch_end(self, *args, **kwargs):
        self.model_ema.update()

    def p_losses(self, x_start, t):
        noise = torch.randn_like(x_start)
        model_out = self.model(x_start + noise, t)
        if self.parameterization == "eps":
            target = noise
        elif self.parameterization == "x0":
            target = x_start
        return F.mse_loss(model_out, target)

    def training_step(self, batch, batch_idx):
        t = torch.randint(0, 1000, (batch.shape[0],))
        loss = self.p_losses(batch, t)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate)
"""

AUTOENCODER_MODULE = """\
import torch
import pytorch_lightning as pl


class Autoencoder(pl.LightningModule):
    def training_step(self, batch, batch_idx, optimizer_idx):
        rec_loss = (self(batch) - batch).abs().mean()
        self.log("train/rec", rec_loss)
        return rec_loss

    def configure_optimizers(self):
        opt_ae = torch.optim.Adam(self.encoder.parameters(), lr=self.learning_rate, betas=(0.5, 0.9))
        opt_disc = torch.optim.Adam(self.disc.parameters(), lr=self.learning_rate, betas=(0.5, 0.9))
        return [opt_ae, opt_disc], []
"""


def _launcher(root: Path, configs: dict[str, str]) -> None:
    _write(
        root,
        {
            "main.py": LAUNCHER,
            "ldm/__init__.py": "",
            "ldm/models/__init__.py": "",
            "ldm/models/diffusion.py": DIFFUSION_MODULE,
            "ldm/models/autoencoder.py": AUTOENCODER_MODULE,
            **configs,
        },
    )


def test_a_lightning_launcher_takes_the_verdicts_of_the_models_its_configs_name(tmp_path):
    """Before: `check main.py` said "no optimizer step found" and unknown for every key."""
    _launcher(
        tmp_path,
        {
            "configs/ldm.yaml": (
                "model:\n  target: ldm.models.diffusion.DDPM\n  params:\n"
                "    first_stage_config:\n      target: ldm.models.autoencoder.Autoencoder\n"
            ),
            "configs/vae.yaml": "model:\n  target: ldm.models.autoencoder.Autoencoder\n",
        },
    )
    states = _verdicts(tmp_path, "main.py")
    assert "diffusion.py, autoencoder.py" in states["_note"] or "autoencoder.py, diffusion.py" in states["_note"]
    # the two models differ: the config chosen at run time decides
    assert states["ema"] == "decided-elsewhere" and states["vpred"] == "decided-elsewhere"
    # both agree: neither logs the gradient norm, neither schedules the learning rate
    assert states["monitoring"] == "missing" and states["lr-schedule"] == "missing"
    # the Trainer is built from the command line
    assert states["clipping"] == "decided-elsewhere"


def test_a_nested_target_is_a_part_of_the_model_not_a_model_trained(tmp_path):
    _launcher(
        tmp_path,
        {
            "configs/ldm.yaml": (
                "model:\n  target: ldm.models.diffusion.DDPM\n  params:\n"
                "    first_stage_config:\n      target: ldm.models.autoencoder.Autoencoder\n"
            )
        },
    )
    states = _verdicts(tmp_path, "main.py")
    assert states["ema"] == "present" and states["vpred"] == "missing" and states["cosine"] == "off-by-default"


def test_a_class_nothing_in_the_unit_builds_runs_with_its_constructor_defaults(tmp_path):
    """LDM's DDPM checked on its own: built from a YAML config, so parameterization="eps" and
    beta_schedule="linear" (cosine supported) are what runs when the config leaves them out."""
    _launcher(tmp_path, {})
    states = _verdicts(tmp_path, "ldm/models/diffusion.py")
    assert states["vpred"] == "missing"  # only eps and x0 exist: no switch to v
    assert states["cosine"] == "off-by-default"  # make_beta_schedule knows "cosine"
    assert states["zero-snr"] == "n/a"
    assert states["clipping"] == "decided-elsewhere" and states["monitoring"] == "missing"


def test_a_lightning_scheduler_built_from_what_the_module_receives_is_decided_elsewhere(tmp_path):
    """lightning-hydra-template: ``self.hparams.scheduler(optimizer=...)``, a partial a Hydra config fills."""
    module = AUTOENCODER_MODULE.replace(
        "        return [opt_ae, opt_disc], []\n",
        "        scheduler = self.hparams.scheduler(optimizer=opt_ae)\n"
        '        return {"optimizer": opt_ae, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}\n',
    )
    _write(tmp_path, {"module.py": module})
    states = _verdicts(tmp_path, "module.py")
    assert states["lr-schedule"] == "decided-elsewhere"
    _write(tmp_path, {"module.py": AUTOENCODER_MODULE})
    assert _verdicts(tmp_path, "module.py")["lr-schedule"] == "missing"


HANDED_LOOP = """\
import torch


def training_loop(dataset_kwargs={{}}, network_kwargs={{}}, loss_kwargs={{}}, lr=1e-3):
    net = construct_class_by_name(**network_kwargs)
    loss_fn = {loss}
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for images in construct_class_by_name(**dataset_kwargs):
        optimizer.zero_grad()
        loss = loss_fn(net=net, images=images)
        loss.sum().backward()
        optimizer.step()
"""

HANDED_MODEL = """\
import torch


class Palette:
    def __init__(self, networks, losses, optimizers):
        self.netG = networks[0]
        self.loss_fn = losses[0]
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=5e-5)

    def train_step(self, loader):
        for gt_image, cond_image in loader:
            self.optG.zero_grad()
            loss = self.netG(gt_image, cond_image)
            loss.backward()
            self.optG.step()
"""


def test_a_loss_computed_by_an_object_the_unit_receives_is_decided_elsewhere(tmp_path):
    """NVlabs/edm training_loop.py (loss_fn from construct_class_by_name(**loss_kwargs)) and Palette's
    model.py (the loss is the forward of networks[0]) checked on their own: the diffusion keys were
    unknown ("no objective recognised"); the caller decides them."""
    _write(tmp_path, {"training_loop.py": HANDED_LOOP.format(loss="construct_class_by_name(**loss_kwargs)")})
    states = _verdicts(tmp_path, "training_loop.py")
    assert states["cosine"] == "decided-elsewhere" and states["vpred"] == "decided-elsewhere"
    assert "loss_kwargs" in states["_note"]
    _write(tmp_path, {"model.py": HANDED_MODEL})
    assert _verdicts(tmp_path, "model.py")["lpips"] == "decided-elsewhere"


def test_a_loss_built_in_the_unit_is_not_handed_in(tmp_path):
    _write(tmp_path, {"training_loop.py": HANDED_LOOP.format(loss="MyLoss(sigma_data=0.5)")})
    assert _verdicts(tmp_path, "training_loop.py")["cosine"] == "unknown"


def test_a_loss_parameter_whose_default_names_a_class_is_not_handed_in(tmp_path):
    """NVlabs/edm2: loss_kwargs=dict(class_name='training.training_loop.EDM2Loss') is the run's loss
    unless the caller overrides it: not decided elsewhere (LPIPS was wrongly decided-elsewhere)."""
    loop = HANDED_LOOP.format(loss="construct_class_by_name(**loss_kwargs)").replace(
        "loss_kwargs={}", 'loss_kwargs=dict(class_name="losses.EDMLoss")'
    )
    _write(tmp_path, {"training_loop.py": loop})
    assert _verdicts(tmp_path, "training_loop.py")["cosine"] != "decided-elsewhere"


def test_a_launcher_model_trains_through_its_base_class_and_the_launchers_trainer_counts(tmp_path):
    """lllyasviel/ControlNet: tutorial_train.py fits cldm.ControlLDM (a LatentDiffusion subclass with
    no training_step of its own) with pl.Trainer(precision=32): "no optimizer step found" before;
    the Trainer built in the launcher sets no gradient_clip_val, so clipping is missing."""
    _launcher(
        tmp_path,
        {
            "cldm/__init__.py": "",
            "cldm/cldm.py": (
                "import torch\nfrom ldm.models.diffusion import DDPM\n\n\nclass ControlLDM(DDPM):\n"
                "    def configure_optimizers(self):\n"
                "        return torch.optim.AdamW(self.control_model.parameters(), lr=self.learning_rate)\n"
            ),
            "models/cldm.yaml": "model:\n  target: cldm.cldm.ControlLDM\n",
        },
    )
    (tmp_path / "main.py").write_text(
        LAUNCHER.replace("pl.Trainer.from_argparse_args(opt)", "pl.Trainer(precision=32, max_epochs=1)")
    )
    states = _verdicts(tmp_path, "main.py")
    assert "cldm.py" in states["_note"]
    assert states["clipping"] == "missing" and states["vpred"] == "missing"


def test_a_scheduler_the_training_function_receives_is_decided_elsewhere(tmp_path):
    """facebookresearch/flow_matching train_loop.py checked alone: train_one_epoch(..., lr_schedule)
    steps a scheduler its caller built; was "the learning rate is constant" (missing, wrong)."""
    loop = (
        "import torch\n\n\n"
        "def train_one_epoch(model, data_loader, optimizer, lr_schedule, epoch):\n"
        "    for x in data_loader:\n"
        "        loss = model(x).mean()\n"
        "        optimizer.zero_grad()\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "    lr_schedule.step()\n"
    )
    _write(tmp_path, {"train_loop.py": loop})
    assert _verdicts(tmp_path, "train_loop.py")["lr-schedule"] == "decided-elsewhere"


def test_a_launcher_reaches_the_package_it_puts_on_sys_path(tmp_path):
    """instruct-pix2pix: ``sys.path.append("./stable_diffusion")`` in main.py, the LDM package and
    the model the config names under it. Before: "no optimizer step found", unknown for every key."""
    launcher = LAUNCHER.replace(
        "import argparse\n", 'import argparse\nimport sys\n\nsys.path.append("./vendored")\n', 1
    )
    _write(
        tmp_path,
        {
            "main.py": launcher,
            "vendored/ldm/__init__.py": "",
            "vendored/ldm/models/__init__.py": "",
            "vendored/ldm/models/diffusion.py": DIFFUSION_MODULE,
            "configs/train.yaml": "model:\n  target: ldm.models.diffusion.DDPM\n",
        },
    )
    states = _verdicts(tmp_path, "main.py")
    assert "diffusion.py" in states["_note"]
    assert states["ema"] == "present" and states["vpred"] == "missing" and states["cosine"] == "off-by-default"
