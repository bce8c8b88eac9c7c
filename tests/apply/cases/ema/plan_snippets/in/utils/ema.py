"""Exponential moving average of model weights."""

import torch
import torch.nn as nn


class EMA:
    """Keeps a shadow copy of the trainable parameters.

    ``update()`` is meant to be called after every optimizer step; the shadow
    weights are only refreshed every ``update_every`` calls.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, update_every: int = 1):
        self.model = model
        self.decay = decay
        self.update_every = update_every
        self.num_calls = 0
        self.shadow = {}
        self.backup = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                self.shadow[name] = param.detach().clone()

    @torch.no_grad()
    def update(self):
        self.num_calls += 1
        if self.num_calls % self.update_every != 0:
            return
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                self.shadow[name].mul_(self.decay).add_(param.detach(), alpha=1.0 - self.decay)

    def apply_shadow(self):
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                self.backup[name] = param.detach().clone()
                param.data.copy_(self.shadow[name])

    def restore(self):
        for name, param in self.model.named_parameters():
            if param.requires_grad and name in self.backup:
                param.data.copy_(self.backup[name])
        self.backup = {}

    def state_dict(self):
        return {"decay": self.decay, "num_calls": self.num_calls, "shadow": self.shadow}

    def load_state_dict(self, state_dict):
        self.decay = state_dict["decay"]
        self.num_calls = state_dict.get("num_calls", 0)
        for name, value in state_dict["shadow"].items():
            self.shadow[name].copy_(value)
