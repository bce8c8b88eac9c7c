"""DDIM noise scheduler, math first."""

import math

import torch

BETA_SCHEDULES = ("linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction")


class DDIMScheduler:
    def __init__(self, num_train_timesteps: int = 100, beta_schedule: str = "linear", prediction_type: str = "epsilon"):
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        if beta_schedule == "linear":
            self.betas = self._linear_beta_schedule(num_train_timesteps)
        else:
            self.betas = self._cosine_beta_schedule(num_train_timesteps)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def _linear_beta_schedule(self, timesteps: int) -> torch.Tensor:
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps)

    def _cosine_beta_schedule(self, timesteps: int, s: float = 0.008) -> torch.Tensor:
        steps = timesteps + 1
        x = torch.linspace(0, timesteps, steps)
        # the offset s keeps the first betas from vanishing (Nichol & Dhariwal 2021, s = 0.008)
        alphas_cumprod = torch.cos(((x / timesteps + s) / (1 + s)) * math.pi * 0.5) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
        return torch.clip(betas, 0.0001, 0.9999)

    def _alpha(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t].view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._alpha(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def get_velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._alpha(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def predict_x0(self, model_output: torch.Tensor, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._alpha(t, sample)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * sample - (1 - a).sqrt() * model_output
        return (sample - (1 - a).sqrt() * model_output) / a.sqrt()
