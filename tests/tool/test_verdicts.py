"""Verdicts: `check` says per optimization what it knows (present, missing, off by default,
decided elsewhere, unknown, n/a), never passes what it did not see, and keeps diffusion advice
for diffusion trainers. Each case is a condensed form of a failure seen on public trainers."""

import json
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from optimizer_tool.cli import app

DIFFUSERS_LOOP = """\
import argparse
import copy
import torch
from diffusers import DDPMScheduler

parser = argparse.ArgumentParser()
parser.add_argument("--use_ema", action="store_true")
parser.add_argument("--max_grad_norm", type=float, default=0.0)
args = parser.parse_args()
model = torch.nn.Linear(4, 4)
noise_scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
if args.use_ema:
    ema = torch.optim.swa_utils.AveragedModel(model)
for x in range(10):
    noise = torch.randn(4)
    t = torch.randint(0, 1000, (1,))
    loss = (model(noise_scheduler.add_noise(x, noise, t)) - noise).pow(2).mean()
    loss.backward()
    if args.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    optimizer.step()
    if args.use_ema:
        ema.update_parameters(model)
"""

CLASSIFIER = """\
import torch
import torch.nn.functional as F

model = torch.nn.Linear(784, 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for images, labels in loader:
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""

NO_TRAINING = """\
import torch

def build_model():
    return torch.nn.Linear(4, 4)
"""

PRETRAINED = """\
import torch
from diffusers import DDPMScheduler, UNet2DModel

model = UNet2DModel(sample_size=128)
noise_scheduler = DDPMScheduler.from_pretrained("some/model", subfolder="scheduler")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
for x in loader:
    noise = torch.randn_like(x)
    loss = (model(noise_scheduler.add_noise(x, noise, 10)).sample - noise).pow(2).mean()
    loss.backward()
    optimizer.step()
"""


def check(tmp_path: Path, source: str, *args: str, config: str = "") -> tuple[int, dict]:
    (tmp_path / "train.py").write_text(textwrap.dedent(source), encoding="utf-8")
    if config:
        (tmp_path / "pyproject.toml").write_text(textwrap.dedent(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(tmp_path / "train.py"), "--output-format", "json", *args])
    return result.exit_code, json.loads(result.output)


def states(document: dict) -> dict[str, str]:
    (unit,) = document["units"]
    return {key: v["state"] for key, v in unit["verdicts"].items()}


def test_a_flag_that_defaults_off_is_off_by_default_and_named(tmp_path):
    _, document = check(tmp_path, DIFFUSERS_LOOP)
    verdicts = document["units"][0]["verdicts"]
    assert verdicts["ema"]["state"] == "off-by-default"
    assert "use_ema" in verdicts["ema"]["reason"] and "False" in verdicts["ema"]["reason"]
    assert verdicts["clipping"]["state"] == "off-by-default"  # max_grad_norm defaults to 0.0
    assert "max_grad_norm" in verdicts["clipping"]["reason"]
    assert verdicts["cosine"]["state"] == "present"


def test_the_same_code_on_by_default_is_present(tmp_path):
    source = DIFFUSERS_LOOP.replace('action="store_true"', "type=bool, default=True").replace(
        "default=0.0", "default=1.0"
    )
    _, document = check(tmp_path, source)
    assert states(document)["ema"] == "present" and states(document)["clipping"] == "present"


def test_code_in_an_else_branch_runs_when_the_test_is_false(tmp_path):
    """``if args.no_ema: ... else: ema = ...``: the else part runs by default (the condition was
    read as if it guarded the else part too, which made a default-on EMA off by default)."""
    source = DIFFUSERS_LOOP.replace('"--use_ema"', '"--no_ema"').replace(
        "if args.use_ema:\n    ema", "if args.no_ema:\n    ema = None\nelse:\n    ema"
    )
    source = source.replace("    if args.use_ema:\n        ema.update", "    if not args.no_ema:\n        ema.update")
    assert "else:\n    ema = torch" in source
    _, document = check(tmp_path, source)
    assert states(document)["ema"] == "present"
    flipped = source.replace('"--no_ema", action="store_true"', '"--no_ema", type=bool, default=True')
    _, document = check(tmp_path, flipped)
    assert states(document)["ema"] == "off-by-default"


def test_zero_snr_is_not_applicable_without_v_prediction(tmp_path):
    _, document = check(tmp_path, DIFFUSERS_LOOP)
    assert states(document)["zero-snr"] == "n/a"


def test_a_classifier_gets_no_diffusion_advice(tmp_path):
    code, document = check(tmp_path, CLASSIFIER)
    (unit,) = document["units"]
    assert unit["diffusion"] is False and "not a diffusion trainer" in unit["note"]
    diffusion_keys = {"cosine", "offset", "zero-snr", "vpred", "lpips", "resolution"}
    assert {k for k, s in states(document).items() if s == "n/a"} == diffusion_keys
    assert not [f for f in document["findings"] if f["optimization"] in diffusion_keys]
    ema = next(f for f in document["findings"] if f["code"] == "EMA001")
    assert "diffusion" not in ema["message"]
    assert code == 1  # the generic findings (EMA, LR schedule, clipping) still fail the gate


def test_nothing_seen_is_unknown_never_a_pass(tmp_path):
    code, document = check(tmp_path, NO_TRAINING)
    assert set(states(document).values()) == {"unknown"}
    assert "no optimizer step found" in document["units"][0]["note"]
    assert code == 0  # unknown does not fail by default...
    code, _ = check(tmp_path, NO_TRAINING, "--fail-on", "unknown")
    assert code == 1  # ...but a gate can demand full understanding
    result = CliRunner().invoke(app, ["check", str(tmp_path / "train.py"), "--output-format", "concise"])
    assert "All checks passed" not in result.output
    assert "no optimizer step found in train.py" in result.output and "10 unknown" in result.output


def test_required_keys_fail_on_unknown(tmp_path):
    config = """\
    [tool.t2s-opt]
    require = ["ema"]
    """
    code, _ = check(tmp_path, NO_TRAINING, config=config)
    assert code == 1


def test_a_pretrained_schedule_is_decided_elsewhere(tmp_path):
    _, document = check(tmp_path, PRETRAINED)
    verdicts = document["units"][0]["verdicts"]
    assert verdicts["cosine"]["state"] == "decided-elsewhere"
    assert "pretrained" in verdicts["cosine"]["reason"]


def test_full_table_shows_verdicts_and_why(tmp_path):
    (tmp_path / "train.py").write_text(DIFFUSERS_LOOP, encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(tmp_path / "train.py")])
    assert "verdict" in result.output and "off by default" in result.output
    assert "ema: off-by-default: `args.use_ema` is false by default" in result.output
    assert "Verdicts:" in result.output


LUCIDRAINS_STYLE = """\
import torch
from denoising_diffusion_pytorch import GaussianDiffusion


def exists(x):
    return x is not None


class Trainer:
    def __init__(self, diffusion, max_grad_norm=None):
        self.model = diffusion
        self.max_grad_norm = max_grad_norm
        self.opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4)

    def train(self, loader):
        for x in loader:
            loss = self.model(x)
            loss.backward()
            if exists(self.max_grad_norm):
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.opt.step()
"""

SELECTED_SCHEDULE = """\
import argparse
import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler

parser = argparse.ArgumentParser()
parser.add_argument("--lr_scheduler", type=str, default="constant")
parser.add_argument("--lr_warmup_steps", type=int, default=500)
args = parser.parse_args()
model = torch.nn.Linear(4, 4)
noise_scheduler = DDPMScheduler()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps)
for x in loader:
    loss = model(noise_scheduler.add_noise(x, torch.randn_like(x), 10)).mean()
    loss.backward()
    optimizer.step()
    lr_scheduler.step()
"""


def test_clipping_behind_exists_of_a_none_default_is_off_by_default(tmp_path):
    _, document = check(tmp_path, LUCIDRAINS_STYLE)
    clipping = document["units"][0]["verdicts"]["clipping"]
    assert clipping["state"] == "off-by-default" and "max_grad_norm" in clipping["reason"]


def test_a_constant_schedule_chosen_by_a_flag_default_is_off_by_default(tmp_path):
    _, document = check(tmp_path, SELECTED_SCHEDULE)
    schedule = document["units"][0]["verdicts"]["lr-schedule"]
    assert schedule["state"] == "off-by-default"
    assert "lr_scheduler defaults to 'constant'" in schedule["reason"]


HAND_WRITTEN_LR = """\
import torch
from diffusers import DDPMScheduler

model = torch.nn.Linear(4, 4)
noise_scheduler = DDPMScheduler()
optim = torch.optim.Adam(model.parameters(), lr=1e-4)
for ep in range(n_epoch):
    optim.param_groups[0]["lr"] = 1e-4 * lr_table[ep]
    for x in loader:
        loss = model(noise_scheduler.add_noise(x, torch.randn_like(x), 10)).mean()
        loss.backward()
        optim.step()
"""

UNCALLED_HELPER = {
    "train.py": """\
import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from helpers import build_model

model = build_model()
noise_scheduler = DDPMScheduler()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
lr_scheduler = get_scheduler("constant", optimizer=opt)
for x in loader:
    loss = model(noise_scheduler.add_noise(x, torch.randn_like(x), 10)).mean()
    loss.backward()
    opt.step()
    lr_scheduler.step()
""",
    "helpers.py": """\
import torch


def build_model():
    return torch.nn.Linear(4, 4)


def warmup_cosine(optimizer, warmup=500, total=10000):
    def fn(step):
        return min(step / warmup, 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
""",
}


def test_a_hand_written_lr_formula_is_unknown_not_present(tmp_path):
    _, document = check(tmp_path, HAND_WRITTEN_LR)
    schedule = document["units"][0]["verdicts"]["lr-schedule"]
    assert schedule["state"] == "unknown" and "could not be read" in schedule["reason"]
    # one minus a progress ratio is read: a linear decay without warm-up
    _, document = check(tmp_path, HAND_WRITTEN_LR.replace("lr_table[ep]", "(1 - ep / n_epoch)"))
    assert document["units"][0]["verdicts"]["lr-schedule"]["state"] == "missing"


def test_a_schedule_helper_the_entry_never_calls_does_not_count(tmp_path):
    (tmp_path / "helpers.py").write_text(UNCALLED_HELPER["helpers.py"], encoding="utf-8")
    _, document = check(tmp_path, UNCALLED_HELPER["train.py"])
    assert document["units"][0]["verdicts"]["lr-schedule"]["state"] == "missing"


GAN = """\
import torch

generator = Generator()
discriminator = Discriminator()
optimizer_G = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
criterion = torch.nn.MSELoss()
for real in loader:
    z = torch.randn(real.shape[0], 100)
    fake = generator(z)
    loss_G = criterion(discriminator(fake), torch.ones(real.shape[0]))
    loss_G.backward()
    optimizer_G.step()
"""

EDM_STYLE_LOOP = """\
import torch

def training_loop(net, loss_fn, loader, lr=1e-3):
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for images, labels in loader:
        loss = loss_fn(net=net, images=images, labels=labels)
        loss.sum().backward()
        optimizer.step()
"""


def test_a_gan_with_adam_betas_is_not_a_diffusion_trainer(tmp_path):
    _, document = check(tmp_path, GAN)
    assert document["units"][0]["diffusion"] is False
    assert states(document)["lpips"] == "n/a" and states(document)["cosine"] == "n/a"


def test_a_loop_whose_objective_is_passed_in_is_undecided_not_a_classifier(tmp_path):
    _, document = check(tmp_path, EDM_STYLE_LOOP)
    (unit,) = document["units"]
    # the loss function is a parameter without a default: whoever passes it decides the objective
    assert unit["diffusion"] is None and "`loss_fn`, parameter of training_loop" in unit["note"]
    assert states(document)["cosine"] == "decided-elsewhere"  # not a confident n/a
    assert not [f for f in document["findings"] if f["optimization"] in ("cosine", "vpred", "lpips")]


TIMM_STYLE = """\
import argparse
import torch
from timm.task import ClassificationTask

parser = argparse.ArgumentParser()
parser.add_argument("--model-ema", action="store_true", default=False)
parser.add_argument("--model-ema-decay", type=float, default=0.9998)
args = parser.parse_args()
task = ClassificationTask(torch.nn.Linear(4, 4))
optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
if args.model_ema:
    task.setup_ema(decay=args.model_ema_decay)
for n, (x, y) in enumerate([]):
    torch.nn.functional.cross_entropy(task(x), y).backward()
    optimizer.step()
    task.update_ema(step=n)
    ema_eval_metrics = validate(task.get_eval_model(ema=True))
"""


def test_an_ema_kept_by_a_library_object_is_judged_by_its_setup_call(tmp_path):
    """timm's train.py: the EMA lives in a task object of a library the unit does not read; it
    was `present` (an `ema_eval_metrics = validate(...)` taken for the EMA) and, without it,
    `missing` (EMA001). The setup call under `if args.model_ema:` makes it off by default."""
    _, document = check(tmp_path, TIMM_STYLE)
    verdict = document["units"][0]["verdicts"]["ema"]
    assert verdict["state"] == "off-by-default" and "model_ema" in verdict["reason"]
    assert not [f for f in document["findings"] if f["optimization"] == "ema"]
    _, document = check(tmp_path, TIMM_STYLE.replace('action="store_true", default=False', "type=bool, default=True"))
    assert states(document)["ema"] == "present"


def test_an_ema_built_in_a_helper_only_called_under_a_false_flag_is_off_by_default(tmp_path):
    source = DIFFUSERS_LOOP.replace(
        "if args.use_ema:\n    ema = torch.optim.swa_utils.AveragedModel(model)\n",
        "def make_ema(model):\n    averaged = torch.optim.swa_utils.AveragedModel(model)\n    return averaged\n\n"
        "if args.use_ema:\n    ema = make_ema(model)\n",
    ).replace("    if args.use_ema:\n        ema.update_parameters(model)\n", "    ema.update_parameters(model)\n")
    assert "def make_ema" in source and "    ema.update_parameters(model)\n" in source
    _, document = check(tmp_path, source)
    assert states(document)["ema"] == "off-by-default"


TRAIN_LOOP = """\
import functools
import torch


class TrainLoop:
    def __init__(self, model, diffusion, data, lr=1e-4):
        self.model = model
        self.diffusion = diffusion
        self.data = data
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr)

    def run_step(self, batch):
        t = torch.randint(0, 1000, (batch.shape[0],))
        compute_losses = functools.partial(self.diffusion.training_losses, self.model, batch, t)
        loss = compute_losses()["loss"].mean()
        loss.backward()
        self.opt.step()
"""


def test_an_objective_handed_in_by_the_caller_is_decided_elsewhere(tmp_path):
    """openai's train_util.py checked on its own: the diffusion object is a constructor parameter,
    so its schedule, objective and image size are chosen by whoever builds the TrainLoop."""
    _, document = check(tmp_path, TRAIN_LOOP)
    verdicts = document["units"][0]["verdicts"]
    for key in ("cosine", "vpred", "resolution"):
        assert verdicts[key]["state"] == "decided-elsewhere", (key, verdicts[key])
        assert "parameter `diffusion` of TrainLoop.__init__" in verdicts[key]["reason"]
    # the same class with a script that builds it: the origin is in the unit, not "elsewhere"
    built = (
        TRAIN_LOOP
        + "\n\nif __name__ == '__main__':\n    TrainLoop(torch.nn.Linear(2, 2), make_diffusion(), []).run_step(None)\n"
    )
    _, document = check(tmp_path, built)
    assert states(document)["cosine"] != "decided-elsewhere"


CASCADE = """\
from contextlib import contextmanager, nullcontext

import torch
from ema_pytorch import EMA


class Trainer:
    def __init__(self, unets, use_ema=True):
        self.unets = unets
        self.use_ema = use_ema
        self.ema_unets = torch.nn.ModuleList([])
        self.opt = torch.optim.Adam([p for u in unets for p in u.parameters()], lr=1e-4)
        for unet in unets:
            if self.use_ema:
                self.ema_unets.append(EMA(unet, beta=0.995))

    def get_ema_unet(self, index):
        return self.ema_unets[index]

    def update(self, index):
        self.opt.step()
        if self.use_ema:
            ema_unet = self.get_ema_unet(index)
            ema_unet.update()

    @contextmanager
    def use_ema_unets(self):
        yield

    @torch.no_grad()
    def sample(self, x, use_non_ema=False):
        context = nullcontext if use_non_ema else self.use_ema_unets
        with context():
            return self.unets[0](x)

    def train_step(self, x, index=0):
        noise = torch.randn_like(x)
        loss = torch.nn.functional.mse_loss(self.unets[index](x + noise), noise)
        loss.backward()
        self.update(index)
"""


def test_emas_built_into_a_list_and_updated_one_at_a_time_are_present(tmp_path):
    """imagen-pytorch: ``self.ema_unets.append(EMA(unet))``, updated through ``get_ema_unet(i).update()``;
    EMA001 said there was no EMA at all. Sampling runs under ``with context():`` where ``context`` is
    the EMA swap (``self.use_ema_unets``): no EMA008."""
    _, document = check(tmp_path, CASCADE)
    assert states(document)["ema"] == "present"
    assert not [f for f in document["findings"] if f["code"] in ("EMA001", "EMA002", "EMA008")]


ACCUMULATE = """\
import torch


def accumulate(model1, model2, decay=0.999):
    par1 = dict(model1.named_parameters())
    par2 = dict(model2.named_parameters())
    for k in par1.keys():
        par1[k].data.mul_(decay).add_(par2[k].data, alpha=1 - decay)


def train(generator, g_ema, g_optim, loader, accum):
    for real in loader:
        noise = torch.randn_like(real)
        loss = torch.nn.functional.mse_loss(generator(real + noise), noise)
        loss.backward()
        g_optim.step()
        accumulate(g_ema, generator, accum)
        sample = g_ema([torch.randn(4, 8)])


if __name__ == "__main__":
    generator = torch.nn.Linear(8, 8)
    g_ema = torch.nn.Linear(8, 8)
    accumulate(g_ema, generator, 0)
    g_optim = torch.optim.Adam(generator.parameters(), lr=2e-3)
    train(generator, g_ema, g_optim, [], 0.5 ** (32 / (10 * 1000)))
"""


def test_an_ema_averaged_by_a_hand_written_helper_is_present_without_guessed_bugs(tmp_path):
    """stylegan2: ``accumulate(g_ema, g_module, accum)`` (mul_/add_ over named parameters) is the
    update; sampling ``g_ema([z])`` is not; the rate is computed, so no horizon is claimed (EMA005
    read the helper's default 0.999 and the sampling call as the update)."""
    _, document = check(tmp_path, ACCUMULATE)
    assert states(document)["ema"] == "present"
    assert not [f for f in document["findings"] if f["optimization"] == "ema" and f["severity"] == "bug"]
