"""Trainer pieces that need no data set: LR schedule, training targets, one accumulation window."""

import json
import math

import pytest
import torch

from reference_trainer.config import smoke_config
from reference_trainer.trainer import Trainer


def _trainer(tmp_path, dataset=None, **train_overrides):
    config = smoke_config()
    config.train.output_dir = str(tmp_path)
    for key, value in train_overrides.items():
        setattr(config.train, key, value)
    return Trainer(config, train_dataset=dataset, device="cpu")


def _batch(config, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (config.train.batch_size, 3, config.data.num_frames, config.data.image_size, config.data.image_size)
    return {"video": torch.rand(shape, generator=g) * 2 - 1, "text": ["HELLO", "THANK YOU"][: shape[0]]}


def test_lr_schedule_warms_up_then_decays_to_zero(tmp_path):
    trainer = _trainer(tmp_path, warmup_steps=4, num_epochs=10)
    total = trainer.steps_per_epoch * 10  # no data set: one step per epoch
    base = trainer.train_config.learning_rate
    lrs = []
    for _ in range(total):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert lrs[:4] == pytest.approx([base * k / 4 for k in (1, 2, 3, 4)])
    assert all(b <= a for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[-1] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 5 / 6)))
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_training_target_matches_prediction_type(tmp_path, prediction_type):
    trainer = _trainer(tmp_path, prediction_type=prediction_type)
    x0, noise, t = torch.rand(2, 3, 4, 16, 16), torch.randn(2, 3, 4, 16, 16), torch.tensor([5, 70])
    expected = {
        "epsilon": noise,
        "v_prediction": trainer.noise_scheduler.get_velocity(x0, noise, t),
        "sample": x0,
    }[prediction_type]
    torch.testing.assert_close(trainer._training_target(x0, noise, t), expected)


def test_optimizer_steps_once_per_accumulation_window(tmp_path):
    clips = [{"video": torch.zeros(3, 4, 16, 16), "text": "HELLO"}] * 4  # any sequence of items is a data set
    trainer = _trainer(tmp_path, dataset=clips, prediction_type="v_prediction")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    losses = [trainer.train_step(_batch(trainer.config, seed)) for seed in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    assert trainer.global_step == 1  # accumulation 2: the third micro-batch waits for a fourth
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed
    rows = [json.loads(line) for line in trainer.metrics_path.read_text().splitlines()]
    first_lr = trainer.train_config.learning_rate / trainer.train_config.warmup_steps
    assert rows == [{"step": 1, "epoch": 1, "loss": pytest.approx(sum(losses[:2]) / 2), "lr": pytest.approx(first_lr)}]
    trainer.writer.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
