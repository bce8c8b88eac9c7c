import pytest
import torch
from torch import nn

from reference_trainer.utils.ema import EMA


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(dtype)


def _perturb(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(value)


def test_one_update_math():
    model = _model()
    ema = EMA(model, decay=0.9, update_every=1)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    _perturb(model, 1.0)
    ema.update()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ema.shadow[name], 0.9 * before[name] + 0.1 * p.detach())


def test_update_every_gates_calls():
    model = _model()
    ema = EMA(model, decay=0.5, update_every=10)
    initial = ema.shadow["0.weight"].clone()
    _perturb(model, 1.0)
    for _ in range(9):
        ema.update()
    torch.testing.assert_close(ema.shadow["0.weight"], initial)
    ema.update()  # 10th call averages
    torch.testing.assert_close(ema.shadow["0.weight"], initial + 0.5)
    assert (ema.num_calls, ema.num_updates) == (10, 1)


def test_double_gate_averages_every_hundred_steps():
    """The plan's `global_step % 10 == 0` gate on top of update_every=10: one average per 100 steps."""
    ema = EMA(_model(), update_every=10)
    for step in range(1, 201):
        if step % 10 == 0:
            ema.update()
    assert ema.num_updates == 2


def test_warmup_ramps_decay():
    ema = EMA(_model(), decay=0.9999, update_every=1, warmup=True)
    assert ema.get_decay() == pytest.approx(0.1)
    ema.update()
    assert ema.get_decay() == pytest.approx(2 / 11)
    assert EMA(_model(), decay=0.9999).get_decay() == 0.9999


def test_apply_shadow_and_restore_roundtrip():
    model = _model()
    ema = EMA(model, decay=0.0, update_every=1)
    _perturb(model, 1.0)
    ema.update()  # decay 0: shadow == current weights
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    _perturb(model, 5.0)
    current = {k: v.clone() for k, v in model.state_dict().items()}
    ema.apply_shadow()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, trained[k])
    with pytest.raises(RuntimeError, match="twice"):
        ema.apply_shadow()
    ema.restore()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, current[k])
    with pytest.raises(RuntimeError, match="without a preceding apply_shadow"):
        ema.restore()


def test_buffers_are_copied_not_averaged():
    model = _model()
    ema = EMA(model, decay=0.9, update_every=1)
    model.train()
    model(torch.randn(8, 4) * 3 + 2)  # updates BatchNorm running stats
    ema.update()
    bn = model[1]
    torch.testing.assert_close(ema.shadow_buffers["1.running_mean"], bn.running_mean)
    assert ema.shadow_buffers["1.num_batches_tracked"].item() == 1
    assert "1.running_mean" not in ema.shadow  # shadow stays aligned with model.parameters()
    assert list(ema.shadow) == [n for n, _ in model.named_parameters()]


def test_low_precision_params_keep_float32_shadow():
    model = _model(torch.bfloat16)
    ema = EMA(model, decay=0.999, update_every=1)
    assert all(t.dtype == torch.float32 for t in ema.shadow.values())
    start = ema.shadow["0.weight"].clone()
    _perturb(model, 1.0)
    ema.update()
    # a bf16 shadow could not represent a 1e-3 step on weights of magnitude ~0.5
    assert torch.all(ema.shadow["0.weight"] != start)
    ema.apply_shadow()
    assert model[0].weight.dtype == torch.bfloat16
    ema.restore()


def test_state_dict_roundtrip(tmp_path):
    model = _model()
    ema = EMA(model, decay=0.9, update_every=2, warmup=True)
    _perturb(model, 1.0)
    for _ in range(4):
        ema.update()
    path = tmp_path / "ema.pt"
    torch.save(ema.state_dict(), path)
    other = EMA(_model(), decay=0.5, update_every=7)
    other.load_state_dict(torch.load(path, weights_only=True))
    assert (other.decay, other.update_every, other.warmup, other.num_calls, other.num_updates) == (0.9, 2, True, 4, 2)
    for k in ema.shadow:
        torch.testing.assert_close(other.shadow[k], ema.shadow[k])


def test_load_state_dict_rejects_another_model():
    ema = EMA(_model())
    other = EMA(nn.Linear(4, 3))
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict(ema.state_dict())
