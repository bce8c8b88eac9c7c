"""Gradient clipping (plan priority 8).

Clipping the global gradient norm (1.0 is the common default) keeps a rare large
gradient — a bad batch, a high-noise timestep, an fp16 overflow — from throwing
the weights far off. It only works on the real gradients: after
``scaler.unscale_(optimizer)`` when a ``GradScaler`` is used, and before
``optimizer.step()``. The plan's 0.5 is an experiment to try, not a defect, and
``max_grad_norm = None`` simply turns clipping off.

Recognised: ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_`` in any import
spelling, ``accelerator.clip_grad_norm_``, Fabric / Lightning ``clip_gradients``,
Lightning ``Trainer(gradient_clip_val=...)`` (also from its YAML config), a
project's own ``clip_grad(...)`` helper, a ``max_grad_norm`` handed to a helper
that clips (timm / MAE loss scalers).
"""

# The package's modules: ``facts`` (the clipping calls, thresholds and their defaults), ``rules``
# (CLIP001-004) and ``fix`` (the codemod, one step per code).

from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.training import clip_calls

KEY = "clipping"
TITLE = "Gradient clipping"
ORDER = 80  # place in the checklist: the plan's order


def implementations(index: UnitIndex) -> list[CallSite]:
    """The clipping calls (under ``if args.max_grad_norm > 0:`` clipping is off when it defaults to 0)."""
    return clip_calls(index)
