"""The EMA check on checkpoints in the formats of the EMA helpers people use (torch AveragedModel / timm
ModelEmaV2: a module state dict with a prefix; diffusers EMAModel: an unnamed list; ema_pytorch: EMA
and live copies side by side), written with torch.save and judged as smoke-test judges the last
checkpoint a run wrote."""

from __future__ import annotations

import copy

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from optimizer_tool.smoke.checks import Expectations, check_ema_checkpoint
from optimizer_tool.smoke.probe import sample_values
from optimizer_tool.smoke.records import ProbeRecord


def trained(steps: int = 3):
    """A small model, the fingerprints of its initial parameters, and an AveragedModel EMA of it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    init = [{"shape": list(p.shape), "sample": sample_values(p)} for p in model.parameters()]
    initial = copy.deepcopy(model)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
        ema.update_parameters(model)
    return model, initial, ema, init


def judge(tmp_path, checkpoint, init):
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint, path)
    record = ProbeRecord(
        path=tmp_path / "probe.jsonl",
        init=init,
        saves=[{"ev": "save", "type": "dict", "keys": list(checkpoint), "final_path": str(path)}],
    )
    return check_ema_checkpoint(record, Expectations())


def test_averaged_model_checkpoint_passes(tmp_path):
    model, _, ema, init = trained()
    row = judge(tmp_path, {"model": model.state_dict(), "ema": ema.state_dict()}, init)
    assert row.status == "pass", row
    assert row.data["tensors"] == 4 and row.data["mean_abs_diff"] > 0  # "module.0.weight" -> "0.weight"


def test_diffusers_style_shadow_params_list_passes(tmp_path):
    model, _, ema, init = trained()
    shadow = [p.detach().clone() for p in ema.module.parameters()]
    row = judge(
        tmp_path,
        {"unet": model.state_dict(), "ema_unet": {"decay": 0.9, "optimization_step": 3, "shadow_params": shadow}},
        init,
    )
    assert row.status == "pass" and row.data["tensors"] == 4, row


def test_ema_pytorch_style_ignores_the_online_copy(tmp_path):
    model, _, ema, init = trained()
    state = {"initted": torch.tensor(True), "step": torch.tensor(3)}
    state.update({f"ema_model.{k}": v for k, v in ema.module.state_dict().items()})
    state.update({f"online_model.{k}": v for k, v in model.state_dict().items()})
    row = judge(tmp_path, {"model": model.state_dict(), "ema": state}, init)
    assert row.status == "pass" and row.data["tensors"] == 4, row


def test_ema_left_at_the_initial_weights_fails(tmp_path):
    model, initial, _, init = trained()
    row = judge(tmp_path, {"model": model.state_dict(), "ema": initial.state_dict()}, init)
    assert row.status == "fail" and row.value.startswith("EMA never updated: all 4 trained tensors"), row


def test_ema_equal_to_the_live_weights_fails(tmp_path):
    model, _, _, init = trained()
    row = judge(tmp_path, {"model": model.state_dict(), "ema": copy.deepcopy(model.state_dict())}, init)
    assert row.status == "fail" and "a copy, not an average" in row.value, row


def test_no_ema_is_not_applicable_unless_configured(tmp_path):
    model, _, _, init = trained(1)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict()}, path)
    record = ProbeRecord(
        path=tmp_path / "p", init=init, saves=[{"type": "dict", "keys": ["model"], "final_path": str(path)}]
    )
    assert check_ema_checkpoint(record, Expectations()).status == "n/a"
    configured = check_ema_checkpoint(record, Expectations(ema_on=True))
    assert configured.status == "fail" and "no EMA state" in configured.value
