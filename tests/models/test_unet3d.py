import pytest
import torch
from torch import nn

from t2s.models import UNet3D, UNet3DConfig, count_parameters
from t2s.models.unet3d import TransformerBlock


def tiny_model(**overrides) -> UNet3D:
    return UNet3D(UNet3DConfig.preset("tiny", **overrides))


def dezero_(model: nn.Module) -> nn.Module:
    """Give the zero-initialised layers (adaLN regressors, output conv) random
    weights, so every path carries signal, as after some training."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv3d)) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.1)
            nn.init.normal_(module.bias, std=0.1)
    return model


def inputs(batch=2, frames=4, size=16, context_dim=64, tokens=6):
    x = torch.randn(batch, 3, frames, size, size)
    t = torch.randint(0, 1000, (batch,))
    context = torch.randn(batch, tokens, context_dim)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[1, 3:] = False  # second prompt is shorter: 3 real tokens, 3 padding
    return x, t, context, mask


def test_default_preset_is_about_42m_parameters():
    cfg = UNet3DConfig.preset("default")
    assert (cfg.model_channels, cfg.image_size, cfg.num_frames, cfg.context_dim) == (96, 64, 16, 512)
    with torch.device("meta"):  # count without allocating 44M floats
        model = UNet3D(cfg)
    assert 38e6 <= count_parameters(model) <= 46e6


def test_tiny_preset_is_small():
    assert count_parameters(tiny_model()) < 1e6


def test_config_errors_are_explicit():
    with pytest.raises(ValueError, match="unknown UNet3D preset 'huge'"):
        UNet3DConfig.preset("huge")
    with pytest.raises(ValueError, match="image_size=60 must be divisible by 8"):
        UNet3DConfig(image_size=60)
    with pytest.raises(ValueError, match="transformer_levels"):
        UNet3DConfig(transformer_levels=(4,))


def test_config_round_trips_through_dict():
    cfg = UNet3DConfig.preset("tiny")
    assert UNet3DConfig.from_dict(cfg.to_dict()) == cfg


def test_forward_shape_and_every_parameter_gets_a_gradient():
    model = dezero_(tiny_model())
    x, t, context, mask = inputs()
    out = model(x, t, context, mask)
    assert out.shape == x.shape
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_zero_init_output_and_identity_dit_blocks():
    model = tiny_model()
    x, t, context, mask = inputs()
    seen = []

    def check_identity(block, args, output):
        seen.append(torch.equal(output, args[0]))

    for block in model.modules():
        if isinstance(block, TransformerBlock):
            block.register_forward_hook(check_identity)
    out = model(x, t, context, mask)
    assert len(seen) >= 3 and all(seen), "adaLN-Zero blocks must be the identity at init"
    assert not out.any(), "zero-initialised output conv predicts 0 at init"


def test_padded_context_tokens_do_not_change_the_output():
    model = dezero_(tiny_model()).eval()
    x, t, context, mask = inputs()
    with torch.no_grad():
        ref = model(x, t, context, mask)
        garbage = context.clone()
        garbage[1, 3:] = 100 * torch.randn(3, context.shape[-1])
        assert torch.allclose(model(x, t, garbage, mask), ref, atol=1e-6)
        real_token_changed = context.clone()
        real_token_changed[1, 0] += 1.0
        assert not torch.allclose(model(x, t, real_token_changed, mask)[1], ref[1], atol=1e-4)


def test_prompt_without_kept_tokens_is_unconditional_not_nan():
    model = dezero_(tiny_model()).eval()
    x, t, context, mask = inputs()
    mask[0] = False
    with torch.no_grad():
        out = model(x, t, context, mask)
        other = model(x, t, torch.randn_like(context), mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0], other[0], atol=1e-6)


def _block_and_input():
    block = TransformerBlock(dim=32, heads=2, emb_dim=16, context_dim=8, mlp_ratio=2.0, dropout=0.0)
    nn.init.normal_(block.adaLN_modulation[1].weight, std=0.5)
    nn.init.normal_(block.adaLN_modulation[1].bias, std=0.5)
    x = torch.randn(1, 32, 5, 4, 4)
    return block, x, torch.randn(1, 16), torch.randn(1, 3, 8)


def _frame3_moves_when_frame0_changes(block, x, emb, context) -> bool:
    x2 = x.clone()
    x2[:, :, 0] += torch.randn_like(x2[:, :, 0])
    with torch.no_grad():
        a, b = block(x, emb, context, None), block(x2, emb, context, None)
    return not torch.allclose(a[:, :, 3], b[:, :, 3], atol=1e-6)


def test_temporal_attention_mixes_frames_and_nothing_else_does():
    block, x, emb, context = _block_and_input()
    assert _frame3_moves_when_frame0_changes(block, x, emb, context)
    # Close the temporal-attention gate (chunk 5 of the 12 adaLN outputs): the
    # spatial, cross-attention and MLP paths keep frames independent.
    with torch.no_grad():
        block.adaLN_modulation[1].weight[5 * 32 : 6 * 32] = 0
        block.adaLN_modulation[1].bias[5 * 32 : 6 * 32] = 0
    assert not _frame3_moves_when_frame0_changes(block, x, emb, context)


def test_gradient_checkpointing_gives_same_gradients_and_saves_memory():
    torch.manual_seed(1)
    model = dezero_(tiny_model())
    x, t, context, mask = inputs()

    def grads_and_saved(checkpointing: bool):
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        saved = []

        def pack(tensor):
            saved.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = model(x, t, context, mask).square().mean()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()], sum(saved)

    plain, saved_plain = grads_and_saved(False)
    ckpt, saved_ckpt = grads_and_saved(True)
    assert saved_ckpt < saved_plain / 2
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_on_cpu():
    model = dezero_(tiny_model())
    x, t, context, mask = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, context, mask)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    out.float().mean().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda():
    model = dezero_(tiny_model()).cuda()
    x, t, context, mask = (v.cuda() for v in inputs())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x, t, context, mask)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    out.float().mean().backward()


def test_bad_input_shapes_are_explained():
    model = tiny_model()
    x, t, context, mask = inputs()
    with pytest.raises(ValueError, match=r"context of shape \[2, L, 64\]"):
        model(x, t, context[..., :32], mask)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(x[..., :15, :15], t, context, mask)


def test_fresh_model_learns_from_init_without_tricks():
    """Straight from construction (no de-zeroing), the output convs receive gradient and a few
    Adam steps fit a fixed batch: zero-init must not block learning."""
    torch.manual_seed(0)
    model = tiny_model()
    cfg = model.config if hasattr(model, "config") else None
    x = torch.randn(2, 3, 4, 16, 16)
    t = torch.randint(0, 100, (2,))
    ctx_dim = cfg.context_dim if cfg is not None else 64
    context = torch.randn(2, 5, ctx_dim)
    target = torch.randn_like(x)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model(x, t, context), target)
        opt.zero_grad()
        loss.backward()
        if len(losses) == 1:  # after one step the zeroed temporal conv no longer blocks it
            spatial = model.out[-1].spatial.weight.grad
            assert spatial is not None and spatial.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_plan_option_b_builds_96px_with_80_channels():
    """The plan's resolution option B (96x96, model_channels=80) must build: 80 is not a
    multiple of the default head_dim or norm_groups, and a smaller budget than the default."""
    with torch.device("meta"):
        model = UNet3D(UNet3DConfig.preset("default", model_channels=80, image_size=96))
        default = UNet3D(UNet3DConfig.preset("default"))
    assert count_parameters(model) < count_parameters(default)
