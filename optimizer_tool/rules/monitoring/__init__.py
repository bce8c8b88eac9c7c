"""Training monitoring (the plan's "Monitor TensorBoard" notes).

Three cheap curves tell whether the optimizations work: the gradient norm (is
clipping active, is training stable), the learning rate (is the warm-up and decay
what you planned) and, with an EMA, the distance between the EMA and the live
weights (is the EMA following the model or stuck at its initialisation).

A value counts as logged when it reaches a metrics sink: TensorBoard
``add_scalar(s)``, ``wandb.log``, ``accelerator.log`` / tracker ``.log``, Lightning
``self.log`` / ``self.log_dict``, improved-diffusion ``logger.logkv(_mean)``,
MLflow ``log_metric(s)``, a JSON-lines metrics file; ``print`` and text loggers do
not count. Also recognised: ``wandb.watch`` and Lightning's ``grad_norm`` /
``track_grad_norm`` (gradients), ``LearningRateMonitor`` (learning rate).
"""

from __future__ import annotations

KEY = "monitoring"
TITLE = "Gradient-norm, learning-rate and EMA monitoring"
ORDER = 100  # place in the checklist: the plan's order
