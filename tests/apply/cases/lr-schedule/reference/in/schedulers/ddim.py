"""DDIM noise scheduler (Song et al. 2021), written math-first like diffusers' scheduling_ddim.py.

Notation: ``a_t`` is ``alphas_cumprod[t]``; the forward process is
``x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * eps`` and the velocity target is
``v = sqrt(a_t) * eps - sqrt(1 - a_t) * x0`` (Salimans & Ho 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

BETA_SCHEDULES = ("linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class DDIMSchedulerOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class DDIMScheduler:
    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_schedule: str = "linear",
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ):
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected one of {', '.join(BETA_SCHEDULES)}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {prediction_type!r}; expected one of {', '.join(PREDICTION_TYPES)}"
            )
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")

        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range

        if beta_schedule == "linear":
            self.betas = self._linear_beta_schedule(num_train_timesteps)
        else:
            self.betas = self._cosine_beta_schedule(num_train_timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # The step that lands on t < 0 denoises to the clean sample (diffusers' set_alpha_to_one=True).
        self.final_alpha_cumprod = torch.tensor(1.0)

        self.num_inference_steps: Optional[int] = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.long)

    # ------------------------------------------------------------------ schedules

    def _linear_beta_schedule(self, timesteps: int) -> torch.Tensor:
        """DDPM's linear betas (1e-4 .. 0.02 for 1000 steps), rescaled so T steps reach the same noise level."""
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float32)

    def _cosine_beta_schedule(self, timesteps: int) -> torch.Tensor:
        """Cosine schedule without the s offset of Nichol & Dhariwal: a_bar(t) = cos(t/T * pi/2)^2."""
        steps = timesteps + 1
        x = torch.linspace(0, timesteps, steps)
        alphas_cumprod = torch.cos((x / timesteps) * math.pi * 0.5) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
        return torch.clip(betas, 0.0001, 0.9999)

    # ------------------------------------------------------------------ forward process

    def _alpha_prod(self, timesteps: Union[int, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """a_t gathered per batch element and shaped to broadcast against ``like`` ([B, ...])."""
        alphas_cumprod = self.alphas_cumprod.to(device=like.device, dtype=torch.float32)
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor(timesteps)
        alpha_prod = alphas_cumprod[timesteps.to(device=like.device, dtype=torch.long)]
        while alpha_prod.ndim < like.ndim:
            alpha_prod = alpha_prod.unsqueeze(-1)
        return alpha_prod.to(like.dtype)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        alpha_prod = self._alpha_prod(timesteps, original_samples)
        return alpha_prod.sqrt() * original_samples + (1 - alpha_prod).sqrt() * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v-prediction target for clean ``sample`` (x0) and ``noise`` at ``timesteps``."""
        alpha_prod = self._alpha_prod(timesteps, sample)
        return alpha_prod.sqrt() * noise - (1 - alpha_prod).sqrt() * sample

    def predict_x0(
        self, model_output: torch.Tensor, sample: torch.Tensor, timestep: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """Clean-sample estimate from the model output for the configured prediction type."""
        alpha_prod = self._alpha_prod(timestep, sample)
        if self.prediction_type == "epsilon":
            return (sample - (1 - alpha_prod).sqrt() * model_output) / alpha_prod.sqrt()
        if self.prediction_type == "v_prediction":
            return alpha_prod.sqrt() * sample - (1 - alpha_prod).sqrt() * model_output
        return model_output

    def predict_epsilon(
        self, model_output: torch.Tensor, sample: torch.Tensor, timestep: Union[int, torch.Tensor]
    ) -> torch.Tensor:
        """Noise estimate from the model output for the configured prediction type."""
        alpha_prod = self._alpha_prod(timestep, sample)
        if self.prediction_type == "epsilon":
            return model_output
        if self.prediction_type == "v_prediction":
            return (1 - alpha_prod).sqrt() * sample + alpha_prod.sqrt() * model_output
        return (sample - alpha_prod.sqrt() * model_output) / (1 - alpha_prod).sqrt()

    # ------------------------------------------------------------------ reverse process

    def set_timesteps(self, num_inference_steps: int) -> None:
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be between 1 and num_train_timesteps={self.num_train_timesteps}, "
                f"got {num_inference_steps}"
            )
        self.num_inference_steps = num_inference_steps
        # "leading" spacing, diffusers' DDIM default: T=100, 50 steps -> 98, 96, ..., 0
        step_ratio = self.num_train_timesteps // num_inference_steps
        self.timesteps = (torch.arange(num_inference_steps) * step_ratio).flip(0).to(torch.long)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> DDIMSchedulerOutput:
        """One DDIM update x_t -> x_{t-k}, eq. (12) of Song et al.; eta=0 is deterministic, eta=1 is DDPM-like."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        t = int(timestep)
        prev_t = t - self.num_train_timesteps // self.num_inference_steps

        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod

        pred_original_sample = self.predict_x0(model_output, sample, t)
        pred_epsilon = self.predict_epsilon(model_output, sample, t)
        if self.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-self.clip_sample_range, self.clip_sample_range)

        variance = (1 - alpha_prod_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_prev)
        std_dev_t = eta * variance.sqrt()
        direction = (1 - alpha_prod_prev - std_dev_t**2).sqrt() * pred_epsilon
        prev_sample = alpha_prod_prev.sqrt() * pred_original_sample + direction
        if eta > 0:
            noise = torch.randn(
                sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
            )
            prev_sample = prev_sample + std_dev_t * noise
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
