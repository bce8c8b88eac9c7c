"""Perceptual loss (plan priority 3).

MSE weighs every pixel alike; a small LPIPS term (weight ~0.1) computed on the
model's estimate of the clean image x0 pushes training toward sharper textures
and hand shapes. It only helps when it is a real, differentiable term on an
image: not under ``torch.no_grad()``, not on a detached input, on the x0
estimate rather than the noise / v prediction, in the input range the metric
expects ([-1, 1] for ``lpips.LPIPS`` unless ``normalize=True``), and on 4-D
image batches (video frames folded into the batch).

Recognised: ``lpips.LPIPS``, torchmetrics ``LearnedPerceptualImagePatchSimilarity``
(and its functional form), ``piq`` LPIPS/DISTS, a project's own VGG / perceptual
loss class or ``perceptual_loss`` function.
"""

# The package's modules: ``facts`` (which calls are perceptual or MSE terms, video data, what
# reaches the loss), ``tracing`` (what a perceptual argument is), ``missing`` (LPIPS001),
# ``term`` (LPIPS002-005, a perceptual term used wrongly) and ``fix`` (the codemod, one step per
# kind of change).

KEY = "lpips"
TITLE = "Perceptual (LPIPS) loss"
ORDER = 70  # place in the checklist: the plan's order
DIFFUSION_ONLY = True
