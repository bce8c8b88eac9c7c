# Modified from OpenAI's diffusion repos (timestep respacing for faster sampling).
import torch

from .gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps, section_counts):
    """Evenly spaced subset of the original timesteps (single-section version)."""
    count = int(section_counts[0] if isinstance(section_counts, list) else section_counts)
    if count >= num_timesteps:
        return set(range(num_timesteps))
    frac_stride = (num_timesteps - 1) / (count - 1)
    return set(round(i * frac_stride) for i in range(count))


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion process which can skip steps in a base diffusion process."""

    def __init__(self, use_timesteps, **kwargs):
        self.use_timesteps = set(use_timesteps)
        self.timestep_map = []
        base_diffusion = GaussianDiffusion(**kwargs)
        last_alpha_cumprod = 1.0
        new_betas = []
        for i, alpha_cumprod in enumerate(base_diffusion.alphas_cumprod.tolist()):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                self.timestep_map.append(i)
        kwargs["betas"] = torch.tensor(new_betas, dtype=torch.float64)
        super().__init__(**kwargs)

    def p_mean_variance(self, model, *args, **kwargs):
        return super().p_mean_variance(self._wrap_model(model), *args, **kwargs)

    def training_losses(self, model, *args, **kwargs):
        return super().training_losses(self._wrap_model(model), *args, **kwargs)

    def _wrap_model(self, model):
        map_tensor = torch.tensor(self.timestep_map, dtype=torch.long)

        def wrapped(x, ts, **kwargs):
            return model(x, map_tensor.to(ts.device)[ts], **kwargs)

        return wrapped
