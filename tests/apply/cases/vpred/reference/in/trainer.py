"""A reference-style trainer: the config and the scheduler live in their own modules."""

import torch
import torch.nn.functional as F

from .config import Config
from .schedulers.ddim import DDIMScheduler


class Trainer:
    def __init__(self, config: Config, model: torch.nn.Module):
        self.train_config = config.train
        self.model = model
        self.noise_scheduler = DDIMScheduler(
            num_train_timesteps=self.train_config.num_train_timesteps,
            beta_schedule=self.train_config.beta_schedule,
            prediction_type=self.train_config.prediction_type,
        )
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.train_config.learning_rate)

    def _training_target(self, videos, noise, timesteps):
        if self.noise_scheduler.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(videos, noise, timesteps)
        return noise

    def train_step(self, videos: torch.Tensor) -> float:
        noise = torch.randn_like(videos)
        timesteps = torch.randint(0, self.noise_scheduler.num_train_timesteps, (videos.shape[0],))
        noisy = self.noise_scheduler.add_noise(videos, noise, timesteps)
        target = self._training_target(videos, noise, timesteps)
        loss = F.mse_loss(self.model(noisy, timesteps), target)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()
