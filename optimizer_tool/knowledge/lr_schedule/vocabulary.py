"""Names and patterns the learning-rate schedule model reads: what each library scheduler does,
and the words that mark a warm-up, a decay, a floor and a length in trainer code."""

from __future__ import annotations

import re

# --- what each scheduler does -------------------------------------------------------
HF_GETTERS = (
    "diffusers.optimization.get_scheduler",
    "transformers.get_scheduler",
    "transformers.optimization.get_scheduler",
    "*.get_scheduler",
)
HF_HELPER_NAMES = {
    "get_cosine_schedule_with_warmup",
    "get_linear_schedule_with_warmup",
    "get_constant_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_constant_schedule",
}
HF_HELPER = re.compile(r"^get_(\w+?)_schedule(_with_warmup)?$|^get_(\w+)_schedule_with_warmup$")
TORCH = "torch.optim.lr_scheduler."
PER_EPOCH_CLASSES = {
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "ReduceLROnPlateau",
    "CosineAnnealingWarmRestarts",
    "MultiplicativeLR",
    "CyclicLR",
}
TO_ZERO_NAMES = {"linear", "cosine", "cosine_with_restarts", "polynomial"}
FLOOR_NAMES = {
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "warmup_stable_decay",
    "piecewise_constant",
}
CONSTANT_NAMES = {"constant"}
WARMUP_ONLY_NAMES = {"constant_with_warmup"}

# Names in lambdas and length arguments.
WARMUP_WORD = re.compile(r"warm|ramp_?up", re.I)  # EDM: lr_rampup_kimg
# progress counters; EDM counts images seen (cur_nimg, kimg)
STEP_WORD = re.compile(r"step|iter|update|batches|len\(|estimated_stepping|nimg|kimg", re.I)
EPOCH_WORD = re.compile(r"epoch", re.I)
DECAY_WORD = re.compile(
    r"(^|_)(decay|progress|anneal|remaining|frac|total|max_steps|max_train_steps|num_training_steps|train_steps"
    r"|max_iters?|cos)",
    re.I,
)
FLOOR_WORD = re.compile(
    r"min_lr|lr_min|eta_min|floor|final_lr|end_lr|lr_end|min_ratio|min_factor|min_scale|minimum|final_factor"
    r"|final_ratio",
    re.I,
)
DECAY_CALLS = re.compile(r"(^|\.)(cos|exp|pow)$")
SCHEDULE_HELPER = re.compile(
    r"(adjust|update|set|schedule|anneal|warmup|warm_up|get)_?(learning_rate|lr)|_?anneal_lr|lr_sched|cosine_lr"
    r"|lr_schedule|step_lr|set_lr",
    re.I,
)

# Warm-up and run-length settings (LR004).
WARMUP_SETTINGS = (
    "warmup_steps",
    "lr_warmup_steps",
    "num_warmup_steps",
    "warmup_iters",
    "warmup_iterations",
    "warmup_updates",
)
TOTAL_SETTINGS = (
    "max_train_steps",
    "total_steps",
    "num_train_steps",
    "max_steps",
    "train_steps",
    "num_training_steps",
    "train_num_steps",
    "total_training_steps",
    "max_iters",
    "max_iterations",
    "total_iters_train",
    "num_iterations",
    "iterations",
    "num_iters",
    "n_iters",
    "train_iters",
    "total_iterations",
    "lr_anneal_steps",
)
NEUTRAL_FACTOR = re.compile(r"(^|\.)(num_processes|world_size|num_gpus|n_gpus|num_devices)$")

# Hand-written schedules: a length setting whose default 0 turns the schedule off.
LENGTH_WORD = re.compile(r"anneal|decay_(steps|iters)|lr_(steps|iters)|warmup_(steps|iters)|schedule_steps", re.I)
OFF_KINDS_FIRST = ("config-file", "argparse", "class-default", "dict", "kwarg")
