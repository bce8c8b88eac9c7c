"""Exponential moving average of model weights.

Present in the project but not wired into the trainer (the plan's Priority 1 adds it).
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class EMA:
    """Shadow copy of ``model``'s weights: ``shadow = decay * shadow + (1 - decay) * param``.

    ``update()`` counts its calls and averages only on every ``update_every``-th call, so a
    caller that gates it again (``if step % 10 == 0: ema.update()``) averages every
    ``update_every * 10`` steps. With ``warmup=True`` the decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` over the first averaging steps ``n``, so a short run does
    not leave the shadow stuck near the initial weights.

    ``shadow`` holds every parameter in ``model.named_parameters()`` order (float32 for
    half-precision parameters); buffers (e.g. norm statistics) are copied, not averaged, into
    ``shadow_buffers``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, update_every: int = 10, warmup: bool = False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if update_every < 1:
            raise ValueError(f"EMA update_every must be >= 1, got {update_every}")
        self.model = model
        self.decay = decay
        self.update_every = update_every
        self.warmup = warmup
        self.num_calls = 0  # calls to update()
        self.num_updates = 0  # calls that actually averaged
        self.shadow: Dict[str, torch.Tensor] = {
            name: self._shadow_copy(param) for name, param in model.named_parameters()
        }
        self.shadow_buffers: Dict[str, torch.Tensor] = {
            name: buf.detach().clone() for name, buf in model.named_buffers()
        }
        self.backup: Dict[str, torch.Tensor] = {}
        self.backup_buffers: Dict[str, torch.Tensor] = {}

    @staticmethod
    def _shadow_copy(tensor: torch.Tensor) -> torch.Tensor:
        # Averaging in bf16/fp16 loses (1 - decay) * param entirely for decay close to 1.
        dtype = torch.float32 if tensor.dtype in _LOW_PRECISION else tensor.dtype
        return tensor.detach().to(dtype=dtype, copy=True)

    def get_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        self.num_calls += 1
        if self.num_calls % self.update_every != 0:
            return
        decay = self.get_decay()
        self.num_updates += 1
        for name, param in self.model.named_parameters():
            shadow = self.shadow[name]
            shadow.lerp_(param.detach().to(shadow), 1.0 - decay)
        for name, buf in self.model.named_buffers():
            self.shadow_buffers[name].copy_(buf)

    @torch.no_grad()
    def apply_shadow(self) -> None:
        """Load the averaged weights into the model, keeping the training weights for ``restore()``."""
        if self.backup:
            raise RuntimeError("EMA.apply_shadow() called twice without restore(); the training weights would be lost")
        for name, param in self.model.named_parameters():
            self.backup[name] = param.detach().clone()
            param.copy_(self.shadow[name])  # copy_ casts back to the parameter's dtype
        for name, buf in self.model.named_buffers():
            self.backup_buffers[name] = buf.detach().clone()
            buf.copy_(self.shadow_buffers[name])

    @torch.no_grad()
    def restore(self) -> None:
        if not self.backup:
            raise RuntimeError("EMA.restore() called without a preceding apply_shadow()")
        for name, param in self.model.named_parameters():
            param.copy_(self.backup[name])
        for name, buf in self.model.named_buffers():
            buf.copy_(self.backup_buffers[name])
        self.backup = {}
        self.backup_buffers = {}

    def state_dict(self) -> Dict[str, Any]:
        return {
            "decay": self.decay,
            "update_every": self.update_every,
            "warmup": self.warmup,
            "num_calls": self.num_calls,
            "num_updates": self.num_updates,
            "shadow": {name: t.clone() for name, t in self.shadow.items()},
            "shadow_buffers": {name: t.clone() for name, t in self.shadow_buffers.items()},
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        for key, current in (("shadow", self.shadow), ("shadow_buffers", self.shadow_buffers)):
            loaded = state_dict[key]
            missing = sorted(set(current) - set(loaded))
            unexpected = sorted(set(loaded) - set(current))
            if missing or unexpected:
                raise KeyError(
                    f"EMA state does not match the model ({key}): missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
            for name, tensor in loaded.items():
                if tensor.shape != current[name].shape:
                    raise ValueError(
                        f"EMA {key}[{name!r}] has shape {tuple(tensor.shape)}, model has {tuple(current[name].shape)}"
                    )
                current[name].copy_(tensor)
        self.decay = state_dict["decay"]
        self.update_every = state_dict["update_every"]
        self.warmup = state_dict["warmup"]
        self.num_calls = state_dict["num_calls"]
        self.num_updates = state_dict["num_updates"]
