"""The EMA check on checkpoints written as safetensors files and folders (diffusers `save_pretrained`,
accelerate `save_state` with the EMA model prepared as `model_1.safetensors`, a custom `ema.safetensors`),
the sample check on image and video files, and the clipping check when DeepSpeed clips unseen."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import save_file
from test_ema_formats import trained

from optimizer_tool.smoke import media
from optimizer_tool.smoke.checks import Expectations, check_ema_checkpoint, check_grad_clipping, check_sample
from optimizer_tool.smoke.records import ProbeRecord


def write(path, tensors, optimized=None, step=4):
    """One checkpoint file as the probe records it; safetensors saves carry the probe's `optimized` share."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        save_file(tensors, path)
    else:
        torch.save(tensors, path)
    save = {"type": "safetensors" if path.suffix == ".safetensors" else "dict", "keys": list(tensors), "step": step}
    if optimized is not None:
        save["optimized"] = optimized
    return {**save, "final_path": str(path)}


def judge(tmp_path, saves, init):
    return check_ema_checkpoint(ProbeRecord(path=tmp_path / "probe.jsonl", init=init, saves=saves), Expectations())


def test_diffusers_ema_folder_beside_accelerate_state_passes(tmp_path):
    model, _, ema, init = trained()
    ckpt = tmp_path / "checkpoint-4"
    saves = [
        write(ckpt / "model.safetensors", model.state_dict(), optimized=1.0),
        write(ckpt / "optimizer.bin", {"lr": torch.tensor(0.1)}),
    ]
    # Written by EMAModel.save_pretrained in a save hook: the probe need not have seen it.
    write(ckpt / "unet_ema" / "diffusion_pytorch_model.safetensors", ema.module.state_dict())
    row = judge(tmp_path, saves, init)
    assert row.status == "pass", row
    assert row.data["ema_key"] == "unet_ema/diffusion_pytorch_model.safetensors" and row.data["tensors"] == 4
    assert row.data["checkpoint"] == str(ckpt)


def test_accelerate_model_1_is_the_ema_when_it_is_not_the_optimized_model(tmp_path):
    model, _, ema, init = trained()
    ckpt = tmp_path / "checkpoint-4"
    saves = [
        write(ckpt / "model.safetensors", model.state_dict(), optimized=1.0),
        write(ckpt / "model_1.safetensors", ema.module.state_dict(), optimized=0.0),
    ]
    row = judge(tmp_path, saves, init)
    assert row.status == "pass" and row.data["ema_key"] == "model_1.safetensors", row


def test_custom_ema_safetensors_left_at_init_fails(tmp_path):
    model, initial, _, init = trained()
    saves = [
        write(tmp_path / "out" / "model.safetensors", model.state_dict(), optimized=1.0),
        write(tmp_path / "out" / "ema.safetensors", initial.state_dict(), optimized=0.0),
    ]
    row = judge(tmp_path, saves, init)
    assert row.status == "fail" and row.value.startswith("EMA never updated"), row
    assert "ema.safetensors" in row.value


def test_folder_without_ema_is_off(tmp_path):
    model, _, _, init = trained()
    saves = [write(tmp_path / "checkpoint-4" / "model.safetensors", model.state_dict(), optimized=1.0)]
    row = judge(tmp_path, saves, init)
    assert row.status == "n/a" and "EMA off" in row.value and "checkpoint-4/" in row.value, row


def write_gif(path, frames):
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames).astype(np.uint8))
    return path


def test_sample_videos_are_read_and_blank_frames_fail(tmp_path):
    rng = np.random.default_rng(0)
    good = write_gif(tmp_path / "samples" / "step_10.gif", [rng.integers(0, 255, (16, 16, 3)) for _ in range(3)])
    write_gif(tmp_path / "sample_nan.gif", [rng.integers(0, 255, (16, 16, 3)), np.zeros((16, 16, 3))])
    (tmp_path / "samples" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "other.png").write_bytes(b"not a sample: not looked at")
    found = media.find_sample_media([tmp_path], since=0.0)
    assert sorted(p.name for p in found) == ["broken.png", "sample_nan.gif", "step_10.gif"]

    ok = check_sample(None, [], None, media_files=[media.inspect_media(good)])
    assert ok.status == "pass" and "1 sample file (gif): 3 frames" in ok.value, ok
    bad = check_sample(None, [], None, media_files=[media.inspect_media(p) for p in found])
    assert bad.status == "fail", bad
    assert "sample_nan.gif: 1 of 2 frames blank" in bad.value and "broken.png does not read back" in bad.value


def test_clipping_inside_deepspeed_is_not_judged(tmp_path):
    record = ProbeRecord(
        path=tmp_path / "p", steps=[{"n": 1, "clips": []}], exit={"ev": "exit", "frameworks": ["deepspeed"]}
    )
    row = check_grad_clipping(record, Expectations(max_grad_norm=1.0))
    assert row.status == "n/a" and "DeepSpeed" in row.value and "gradient_clipping" in row.value
    record.exit = None
    assert check_grad_clipping(record, Expectations(max_grad_norm=1.0)).status == "fail"
