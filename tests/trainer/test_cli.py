"""End-to-end runs of `python -m reference_trainer.main` (in-process): smoke training, resume, generate."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from reference_trainer.config import smoke_config
from reference_trainer.main import main

SMOKE = smoke_config()


def _metrics(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """One 2-epoch smoke run shared by the tests below (the expensive part of this folder)."""
    out = tmp_path_factory.mktemp("smoke")
    assert main(["train", "--preset", "smoke", "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_smoke_run_lowers_the_loss(smoke_run):
    rows = _metrics(smoke_run)
    steps_per_epoch = SMOKE.data.synthetic_samples // SMOKE.train.batch_size // SMOKE.train.gradient_accumulation_steps
    assert [r["step"] for r in rows] == list(range(1, 2 * steps_per_epoch + 1))
    assert {r["epoch"] for r in rows} == {1, 2}
    quarter = len(rows) // 4
    first = sum(r["loss"] for r in rows[:quarter]) / quarter
    last = sum(r["loss"] for r in rows[-quarter:]) / quarter
    # An untrained model sits at ~1.0 (the noise variance); a learning one is clearly lower by the end.
    assert last < 0.9 * first, (first, last)
    assert all(r["lr"] > 0 for r in rows)


def test_checkpoints_load_with_weights_only(smoke_run):
    ckpt_dir = smoke_run / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["epoch_1.pt", "epoch_2.pt", "latest.pt"]
    ckpt = torch.load(ckpt_dir / "epoch_2.pt", map_location="cpu", weights_only=True)
    for key in (
        "model_state_dict",
        "text_encoder_state_dict",
        "text_encoder_config",
        "optimizer_state_dict",
        "lr_scheduler_state_dict",
        "rng_state",
    ):
        assert key in ckpt
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == len(_metrics(smoke_run))
    assert ckpt["config"]["train"]["num_epochs"] == 2
    assert ckpt["config"]["data"]["data_dir"] == str(smoke_run / "data")
    latest = torch.load(ckpt_dir / "latest.pt", map_location="cpu", weights_only=True)
    assert latest["global_step"] == ckpt["global_step"]
    assert list((smoke_run / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_continues_the_same_run(smoke_run, tmp_path):
    """Epoch 2 replayed from the epoch-1 checkpoint in a fresh Trainer equals the uninterrupted epoch 2."""
    args = [
        "train",
        "--preset",
        "smoke",
        "--data",
        str(smoke_run / "data"),
        "--out",
        str(tmp_path),
        "--resume",
        str(smoke_run / "checkpoints" / "epoch_1.pt"),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    straight = {r["step"]: r for r in _metrics(smoke_run)}
    resumed = _metrics(tmp_path)
    first = resumed[0]
    assert first["step"] == len(straight) // 2 + 1 and first["epoch"] == 2
    assert first["loss"] == pytest.approx(straight[first["step"]]["loss"], rel=1e-5)
    assert first["lr"] == pytest.approx(straight[first["step"]]["lr"], rel=1e-9)
    assert [r["step"] for r in resumed] == [s for s in straight if s >= first["step"]]

    a = torch.load(smoke_run / "checkpoints" / "epoch_2.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "checkpoints" / "epoch_2.pt", map_location="cpu", weights_only=True)
    for name, tensor in a["model_state_dict"].items():
        torch.testing.assert_close(b["model_state_dict"][name], tensor, atol=1e-5, rtol=1e-4)


def test_generate_writes_one_gif_per_prompt(smoke_run, tmp_path, capsys):
    prompts = ["HELLO", "THANK YOU", "GOOD MORNING"]
    args = [
        "generate",
        "--checkpoint",
        str(smoke_run / "checkpoints" / "latest.pt"),
        "--out",
        str(tmp_path),
        "--steps",
        "5",
        "--device",
        "cpu",
    ]
    for p in prompts:
        args += ["--prompt", p]
    assert main(args) == 0
    gifs = sorted(tmp_path.glob("*.gif"))
    assert len(gifs) == len(prompts)
    for gif in gifs:
        with Image.open(gif) as im:
            assert im.n_frames == SMOKE.data.num_frames
            assert im.size == (SMOKE.data.image_size, SMOKE.data.image_size)
    assert f"{tmp_path}/sample_01_thank_you.gif\tTHANK YOU" in capsys.readouterr().out.splitlines()


def test_generate_samples_returns_videos_in_range(smoke_run, tmp_path):
    from reference_trainer.trainer import Trainer, read_checkpoint_config

    ckpt = smoke_run / "checkpoints" / "latest.pt"
    trainer = Trainer(read_checkpoint_config(ckpt), device="cpu")
    trainer.load_checkpoint(ckpt)
    videos = trainer.generate_samples(["HELLO", "RAIN"], num_inference_steps=4, output_dir=tmp_path)
    assert videos.shape == (2, 3, SMOKE.data.num_frames, SMOKE.data.image_size, SMOKE.data.image_size)
    assert videos.min() >= -1 and videos.max() <= 1
    assert trainer.writer is None and not (tmp_path / "tensorboard").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--checkpoint", "{tmp}/missing.pt", "--prompt", "HI"], "checkpoint not found: {tmp}/missing.pt"),
        (["train", "--out", "{tmp}/run"], "--preset smoke"),
        (["train", "--config", "{tmp}/nope.yaml"], "config file not found: {tmp}/nope.yaml"),
        (["train", "--data", "{tmp}/nodata", "--out", "{tmp}/run"], "data folder not found: {tmp}/nodata"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/run"], "manifest not found: {tmp}/manifest.jsonl"),
        (["train", "--preset", "smoke", "--resume", "{tmp}/x.pt"], "checkpoint not found: {tmp}/x.pt"),
        (["train", "--set", "train.use_ema=true"], "unknown key train.use_ema"),
    ],
)
def test_cli_errors_exit_2_and_name_the_path(tmp_path, capsys, args, message):
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err


def test_generate_rejects_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    assert main(["generate", "--checkpoint", str(bogus), "--prompt", "HI"]) == 2
    assert str(bogus) in capsys.readouterr().err
