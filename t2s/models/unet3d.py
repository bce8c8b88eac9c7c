"""UNet3D for text-to-sign video diffusion.

Video tensors are [B, C, T, H, W]. The network is an ADM-style UNet whose
residual blocks use factorized (2+1)D convolutions (spatial 3x3, then a
3-tap temporal conv) and whose lower-resolution levels add DiT blocks:
adaLN-Zero modulation from the timestep (+ pooled text) embedding, spatial
self-attention within each frame, temporal self-attention along each pixel's
track, cross-attention to text tokens, and an MLP. Sampling is spatial only;
the frame count is never changed inside the network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# ---------------------------------------------------------------- config


@dataclass
class UNet3DConfig:
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 96
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    # Indices into channel_mult that get DiT blocks; attention over H*W is only
    # affordable at the lower resolutions (level 2 of 64x64 is 16x16).
    transformer_levels: tuple[int, ...] = (2, 3)
    transformer_depth: int = 1
    head_dim: int = 64
    num_heads: int | None = None  # when set, overrides head_dim at every level
    mlp_ratio: float = 4.0
    context_dim: int = 512
    # Add a projection of the masked mean of the text tokens to the timestep
    # embedding, so the adaLN modulation sees the prompt as well as t.
    pooled_text_cond: bool = True
    # Clip shape the model is trained on; the network itself accepts any T
    # and any H, W divisible by 2 ** (len(channel_mult) - 1).
    num_frames: int = 16
    image_size: int = 64
    norm_groups: int = 32  # at most; a width it does not divide uses gcd(width, norm_groups) groups
    dropout: float = 0.0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        self.transformer_levels = tuple(self.transformer_levels)
        levels = len(self.channel_mult)
        if levels == 0:
            raise ValueError("UNet3DConfig.channel_mult must have at least one level")
        bad = [lvl for lvl in self.transformer_levels if not 0 <= lvl < levels]
        if bad:
            raise ValueError(
                f"UNet3DConfig.transformer_levels {bad} out of range for "
                f"channel_mult={self.channel_mult} (levels 0..{levels - 1})"
            )
        factor = 2 ** (levels - 1)
        if self.image_size % factor:
            raise ValueError(
                f"UNet3DConfig.image_size={self.image_size} must be divisible by {factor} "
                f"({levels} levels of 2x downsampling)"
            )
        for lvl in set(self.transformer_levels) | {levels - 1}:  # the middle block has attention too
            self.heads_at(self.model_channels * self.channel_mult[lvl])

    def heads_at(self, channels: int) -> int:
        if self.num_heads is not None:
            if channels % self.num_heads:
                raise ValueError(f"channels {channels} not divisible by num_heads={self.num_heads}")
            return self.num_heads
        # Widths like the plan's model_channels=80 are not multiples of 64: take the head count
        # closest to channels / head_dim that divides the width.
        heads = max(1, round(channels / self.head_dim))
        while channels % heads:
            heads -= 1
        return heads

    @classmethod
    def preset(cls, name: str, **overrides) -> "UNet3DConfig":
        presets = {
            # 44.2M parameters, 64x64x16 (the plan's "~42M" model, model_channels=96).
            "default": cls(),
            # 17.0M parameters, for CPU demos and short trainer runs.
            "small": cls(model_channels=64, channel_mult=(1, 2, 2), transformer_levels=(1, 2)),
            # 0.86M parameters; a forward+backward on [2, 3, 4, 16, 16] takes ~0.1 s on one CPU core.
            "tiny": cls(
                model_channels=24,
                channel_mult=(1, 2),
                num_res_blocks=1,
                transformer_levels=(1,),
                head_dim=16,
                mlp_ratio=2.0,
                context_dim=64,
                num_frames=4,
                image_size=16,
                norm_groups=8,
            ),
        }
        if name not in presets:
            raise ValueError(f"unknown UNet3D preset {name!r}; choose one of {sorted(presets)}")
        return replace(presets[name], **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UNet3DConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown UNet3DConfig fields {sorted(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------- helpers


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[N] -> [N, dim] sin/cos features (ADM/DiT timestep embedding), computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    args = positions.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of [B, L, D] counting only mask==True; all-False rows give 0."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class FactorizedConv(nn.Module):
    """(2+1)D conv: spatial 3x3 on each frame, then a 3-tap conv along time."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.spatial = nn.Conv3d(in_ch, out_ch, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(out_ch, out_ch, kernel_size=(3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, timestep embedding as scale/shift of the second norm."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(groups, in_ch), in_ch)
        self.conv1 = FactorizedConv(in_ch, out_ch)
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm2 = nn.GroupNorm(math.gcd(groups, out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = FactorizedConv(out_ch, out_ch)
        self.skip = nn.Conv3d(in_ch, out_ch, kernel_size=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = modulate(self.norm2(h), shift, scale)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, kernel_size=(1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


class Attention(nn.Module):
    """Multi-head attention through F.scaled_dot_product_attention.

    Self-attention when context_dim is None, else cross-attention to a context
    sequence with an optional key padding mask [B, L] (True = attend).
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.is_cross:
            q = self.to_q(x)
            k, v = self.to_kv(context).chunk(2, dim=-1)
        else:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        attn_mask = None
        if mask is not None:
            has_key = mask.any(dim=-1)
            # A row with no kept key would softmax over nothing (NaN); let it attend
            # anywhere and zero its output below, so "no text" means "no text term".
            attn_mask = (mask | ~has_key[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.to_out(out.transpose(1, 2).flatten(2))
        if mask is not None:
            out = out * has_key[:, None, None].to(out.dtype)
        return out


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float, dropout: float):
        hidden = int(dim * ratio)
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )


class TransformerBlock(nn.Module):
    """DiT block for video features: spatial attn, temporal attn, cross attn, MLP.

    Every branch is pre-normed by an affine-free LayerNorm, modulated by
    (shift, scale) and gated by a per-channel gate, all regressed from the
    conditioning embedding. The regressor is zero-initialised (adaLN-Zero), so
    the block is the identity at initialisation.
    """

    BRANCHES = 4  # spatial, temporal, cross, mlp

    def __init__(self, dim: int, heads: int, emb_dim: int, context_dim: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6) for _ in range(self.BRANCHES))
        self.spatial_attn = Attention(dim, heads)
        self.temporal_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads, context_dim=context_dim)
        self.mlp = Mlp(dim, mlp_ratio, dropout)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_(nn.Linear(emb_dim, 3 * self.BRANCHES * dim)))

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None
    ) -> torch.Tensor:
        B, C, T, H, W = x.shape
        h = x.permute(0, 2, 3, 4, 1).reshape(B, T, H * W, C)  # channels-last tokens
        mods = self.adaLN_modulation(emb)[:, None, None, :].chunk(3 * self.BRANCHES, dim=-1)
        (s_shift, s_scale, s_gate, t_shift, t_scale, t_gate, c_shift, c_scale, c_gate, m_shift, m_scale, m_gate) = mods
        n_s, n_t, n_c, n_m = self.norms

        # Spatial: tokens of one frame attend to each other.
        y = modulate(n_s(h), s_shift, s_scale).reshape(B * T, H * W, C)
        h = h + s_gate * self.spatial_attn(y).view(B, T, H * W, C)

        # Temporal: each pixel position attends over frames; the sinusoidal frame
        # index tells attention (which is permutation invariant) the frame order.
        frame_pos = sinusoidal_embedding(torch.arange(T, device=x.device), C).to(h.dtype)
        y = modulate(n_t(h), t_shift, t_scale) + frame_pos[None, :, None, :]
        y = y.transpose(1, 2).reshape(B * H * W, T, C)
        h = h + t_gate * self.temporal_attn(y).view(B, H * W, T, C).transpose(1, 2)

        # Cross: all tokens of the clip attend to the text tokens.
        y = modulate(n_c(h), c_shift, c_scale).reshape(B, T * H * W, C)
        h = h + c_gate * self.cross_attn(y, context, context_mask).view(B, T, H * W, C)

        h = h + m_gate * self.mlp(modulate(n_m(h), m_shift, m_scale))
        return h.view(B, T, H, W, C).permute(0, 4, 1, 2, 3)


# ---------------------------------------------------------------- model


class UNet3D(nn.Module):
    def __init__(self, cfg: UNet3DConfig):
        super().__init__()
        self.cfg = cfg
        self.gradient_checkpointing = cfg.gradient_checkpointing
        ch = cfg.model_channels
        emb_dim = 4 * ch
        groups = cfg.norm_groups

        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_pool_embed = nn.Linear(cfg.context_dim, emb_dim) if cfg.pooled_text_cond else None

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, groups, cfg.dropout)

        def dit(dim: int) -> list[TransformerBlock]:
            heads = cfg.heads_at(dim)
            return [
                TransformerBlock(dim, heads, emb_dim, cfg.context_dim, cfg.mlp_ratio, cfg.dropout)
                for _ in range(cfg.transformer_depth)
            ]

        self.input_conv = FactorizedConv(cfg.in_channels, ch)

        # Down path: every stage's output is kept as a skip connection.
        self.down_stages = nn.ModuleList()
        skip_channels = [ch]
        cur = ch
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            out = ch * mult
            for _ in range(cfg.num_res_blocks):
                layers = [res(cur, out)]
                if level in cfg.transformer_levels:
                    layers += dit(out)
                self.down_stages.append(nn.ModuleList(layers))
                skip_channels.append(out)
                cur = out
            if level != last:
                self.down_stages.append(nn.ModuleList([Downsample(cur)]))
                skip_channels.append(cur)

        self.middle = nn.ModuleList([res(cur, cur), *dit(cur), res(cur, cur)])

        # Up path: one more stage per level than on the way down, to consume the
        # skip left by the downsampler.
        self.up_stages = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            out = ch * mult
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(cur + skip_channels.pop(), out)]
                if level in cfg.transformer_levels:
                    layers += dit(out)
                if level != 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(out))
                self.up_stages.append(nn.ModuleList(layers))
                cur = out

        out_conv = FactorizedConv(cur, cfg.out_channels)
        # Zero only the last op: the output starts at 0 (as in DiT/ADM) while the spatial conv
        # still gets gradients; zeroing both convs would block each other's gradient forever.
        zero_(out_conv.temporal)
        self.out = nn.Sequential(nn.GroupNorm(math.gcd(groups, cur), cur), nn.SiLU(), out_conv)

    def _layer(self, layer: nn.Module, h, emb, context, context_mask) -> torch.Tensor:
        if isinstance(layer, TransformerBlock):
            args = (h, emb, context, context_mask)
        elif isinstance(layer, ResBlock):
            args = (h, emb)
        else:
            return layer(h)  # up/downsampling: cheap to keep activations
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def _stage(self, layers: nn.ModuleList, h, emb, context, context_mask) -> torch.Tensor:
        for layer in layers:
            h = self._layer(layer, h, emb, context, context_mask)
        return h

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, C, T, H, W], timesteps [B] (or scalar), context [B, L, context_dim],
        context_mask [B, L] bool (True = real token). Returns a tensor shaped like x."""
        self._check_inputs(x, context, context_mask)
        B = x.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(B)
        t_freq = sinusoidal_embedding(timesteps, self.cfg.model_channels)
        emb = self.time_embed(t_freq.to(self.time_embed[0].weight.dtype))
        if context_mask is not None:
            context_mask = context_mask.bool()
        if self.text_pool_embed is not None:
            emb = emb + self.text_pool_embed(masked_mean(context, context_mask))

        h = self.input_conv(x)
        skips = [h]
        for stage in self.down_stages:
            h = self._stage(stage, h, emb, context, context_mask)
            skips.append(h)
        h = self._stage(self.middle, h, emb, context, context_mask)
        for stage in self.up_stages:
            h = torch.cat([h, skips.pop()], dim=1)
            h = self._stage(stage, h, emb, context, context_mask)
        return self.out(h)

    def _check_inputs(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> None:
        cfg = self.cfg
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"UNet3D expects x of shape [B, {cfg.in_channels}, T, H, W], got {tuple(x.shape)}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet3D needs H and W divisible by {factor}, got {tuple(x.shape[-2:])}")
        if context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != cfg.context_dim:
            raise ValueError(
                f"UNet3D expects context of shape [{x.shape[0]}, L, {cfg.context_dim}], got {tuple(context.shape)}"
            )
        if context_mask is not None and tuple(context_mask.shape) != tuple(context.shape[:2]):
            raise ValueError(
                f"context_mask shape {tuple(context_mask.shape)} does not match context {tuple(context.shape[:2])}"
            )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
