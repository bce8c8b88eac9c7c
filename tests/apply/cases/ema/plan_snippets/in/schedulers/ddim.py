"""DDIM noise scheduler (training: q(x_t | x_0); sampling: deterministic DDIM)."""

import math
from typing import Optional

import torch


class DDIMScheduler:
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
    ):
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample

        if beta_schedule == "linear":
            self.betas = self._linear_beta_schedule(num_train_timesteps, beta_start, beta_end)
        elif beta_schedule == "cosine":
            self.betas = self._cosine_beta_schedule(num_train_timesteps)
        else:
            raise ValueError(f"Unknown beta schedule: {beta_schedule}")

        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0)
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)

    def _linear_beta_schedule(self, timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float32)

    def _cosine_beta_schedule(self, timesteps: int, s: float = 0.008) -> torch.Tensor:
        """Cosine schedule with improved offset"""
        steps = timesteps + 1
        x = torch.linspace(0, timesteps, steps)
        
        # Add offset for better extreme handling
        offset = 0.008  # Prevents beta from being too small at t=0
        alphas_cumprod = torch.cos(((x / timesteps + offset) / (1 + offset)) * math.pi * 0.5) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        
        betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
        return torch.clip(betas, 0.0001, 0.9999)

    def _expand(self, values: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
        out = values.to(timesteps.device)[timesteps].float()
        while out.ndim < ndim:
            out = out.unsqueeze(-1)
        return out

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self._expand(self.alphas_cumprod, timesteps, x0.ndim)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def get_velocity(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self._expand(self.alphas_cumprod, timesteps, x0.ndim)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def set_timesteps(self, num_inference_steps: int):
        step_ratio = self.num_train_timesteps // num_inference_steps
        self.timesteps = (torch.arange(0, num_inference_steps) * step_ratio).flip(0).long()
        self.step_ratio = step_ratio

    @torch.no_grad()
    def step(self, model_output: torch.Tensor, t: int, sample: torch.Tensor, eta: float = 0.0,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        prev_t = t - self.step_ratio
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod

        if self.prediction_type == "epsilon":
            pred_x0 = (sample - (1 - a_t).sqrt() * model_output) / a_t.sqrt()
            pred_eps = model_output
        elif self.prediction_type == "v_prediction":
            pred_x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * model_output
            pred_eps = a_t.sqrt() * model_output + (1 - a_t).sqrt() * sample
        else:
            raise ValueError(f"Unknown prediction type: {self.prediction_type}")

        if self.clip_sample:
            pred_x0 = pred_x0.clamp(-1, 1)

        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        sigma = eta * variance.sqrt()
        direction = (1 - a_prev - sigma ** 2).sqrt() * pred_eps
        prev_sample = a_prev.sqrt() * pred_x0 + direction
        if eta > 0:
            noise = torch.randn(sample.shape, generator=generator, device=sample.device)
            prev_sample = prev_sample + sigma * noise
        return prev_sample
