"""v-prediction instead of epsilon-prediction (plan priority 6).

An epsilon-predicting model must recover x0 as (x_t - sqrt(1 - a) * eps) / sqrt(a): at high
noise (a -> 0) every error in eps is amplified, and at the last timestep the target says
nothing about the image. Predicting v = sqrt(a) * eps - sqrt(1 - a) * x0 (Salimans & Ho 2022)
keeps the target and the x0 estimate well conditioned at every noise level, and is what
progressive distillation, Imagen Video and Stable Diffusion 2 use.

Switching is one setting — but only if everything that assumes epsilon follows: the loss
target (``scheduler.get_velocity(x0, noise, t)`` instead of ``noise``) and the sampler's x0 /
epsilon estimates. The plan's "just change prediction_type, no code changes needed" is true
only for code that branches on the prediction type.

Recognised: ``prediction_type`` (config defaults, argparse, YAML, diffusers scheduler
keywords and their ``"epsilon"`` default), lucidrains ``objective='pred_noise'|'pred_v'``,
LDM ``parameterization='eps'|'v'``, improved-diffusion / DiT ``predict_xstart=False``, and a
loss computed against the sampled noise with no branch on the prediction type.
"""

# The package's modules: ``facts`` (the prediction type, the loss target, epsilon formulas),
# ``rules`` (VPRED001-003 and their examples) and ``fix`` (the codemod, one step per code).

from optimizer_tool.knowledge.diffusion import PREDICTION_KEYS

KEY = "vpred"
TITLE = "v-prediction"
ORDER = 50  # place in the checklist: the plan's order
DIFFUSION_ONLY = True
# the config keys that choose the objective (a config named at run time decides it)
CONFIG_KEYS = PREDICTION_KEYS
