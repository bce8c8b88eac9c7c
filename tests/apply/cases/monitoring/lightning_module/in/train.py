"""DDPM on sign-language keyframes with PyTorch Lightning.

    python train.py --config configs/sign_ddpm.yaml [--resume last.ckpt]
"""
import argparse
import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import grad_norm
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from data.keyframes import KeyframeDataset
from modules.openaimodel import UNetModel


def linear_beta_schedule(timesteps, beta_start=1e-4, beta_end=2e-2):
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_beta_schedule(timesteps, max_beta=0.999):
    """Cosine schedule from Nichol & Dhariwal (2021)."""
    t = torch.linspace(0, 1, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(t * math.pi / 2) ** 2
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta)


def warmup_cosine(warmup_steps, total_steps, min_ratio=0.01):
    def lr_lambda(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return lr_lambda


def extract(a, t, x_shape):
    out = a.gather(-1, t)
    return out.reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))


class LitDiffusion(pl.LightningModule):
    def __init__(self, unet_config, timesteps=1000, beta_schedule="linear", parameterization="eps",
                 lr=1e-4, warmup_steps=1000, ema_decay=0.9999, image_size=64, channels=3):
        super().__init__()
        assert parameterization in ("eps", "v"), "currently only supporting 'eps' and 'v'"
        self.save_hyperparameters()
        self.parameterization = parameterization
        self.num_timesteps = timesteps
        self.image_size = image_size
        self.channels = channels

        self.model = UNetModel(**unet_config)
        self.model_ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
        self.model_ema.requires_grad_(False)

        if beta_schedule == "cosine":
            betas = cosine_beta_schedule(timesteps)
        else:
            betas = linear_beta_schedule(timesteps)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])

        to_buf = lambda name, val: self.register_buffer(name, val.float(), persistent=False)
        to_buf("betas", betas)
        to_buf("sqrt_alphas_cumprod", alphas_cumprod.sqrt())
        to_buf("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt())
        to_buf("sqrt_recip_alphas_cumprod", (1.0 / alphas_cumprod).sqrt())
        to_buf("sqrt_recipm1_alphas_cumprod", (1.0 / alphas_cumprod - 1).sqrt())
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        to_buf("posterior_log_variance_clipped", torch.log(posterior_variance.clamp(min=1e-20)))
        to_buf("posterior_mean_coef1", betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod))
        to_buf("posterior_mean_coef2", (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod))

    # ---------------------------------------------------------------- diffusion
    def q_sample(self, x_start, t, noise):
        return (extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def get_v(self, x, noise, t):
        return (extract(self.sqrt_alphas_cumprod, t, x.shape) * noise
                - extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape) * x)

    def predict_start_from_noise(self, x_t, t, noise):
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * noise)

    def training_step(self, batch, batch_idx):
        x = batch["image"]
        t = torch.randint(0, self.num_timesteps, (x.shape[0],), device=self.device).long()
        noise = torch.randn_like(x)
        x_noisy = self.q_sample(x, t, noise)
        model_out = self.model(x_noisy, t)

        if self.parameterization == "eps":
            target = noise
        elif self.parameterization == "v":
            target = self.get_v(x, noise, t)
        else:
            raise NotImplementedError(f"Parameterization {self.parameterization} not yet supported")

        loss = F.mse_loss(model_out, target)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.model_ema.update_parameters(self.model)

    def on_before_optimizer_step(self, optimizer):
        self.log_dict(grad_norm(self.model, norm_type=2))

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def p_sample(self, model, x, t):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        model_out = model(x, t_batch)
        x_recon = self.predict_start_from_noise(x, t_batch, model_out).clamp(-1.0, 1.0)
        mean = (extract(self.posterior_mean_coef1, t_batch, x.shape) * x_recon
                + extract(self.posterior_mean_coef2, t_batch, x.shape) * x)
        if t == 0:
            return mean
        log_var = extract(self.posterior_log_variance_clipped, t_batch, x.shape)
        return mean + (0.5 * log_var).exp() * torch.randn_like(x)

    @torch.no_grad()
    def sample(self, batch_size=16):
        model = self.model_ema.module
        model.eval()
        img = torch.randn(batch_size, self.channels, self.image_size, self.image_size, device=self.device)
        for t in reversed(range(self.num_timesteps)):
            img = self.p_sample(model, img, t)
        return img

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            samples = self.sample(batch_size=16)
            grid = make_grid((samples + 1) / 2, nrow=4)
            self.logger.experiment.add_image("val/samples_ema", grid, self.global_step)

    # ---------------------------------------------------------------- optim
    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr, weight_decay=0.0)
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = LambdaLR(opt, lr_lambda=warmup_cosine(self.hparams.warmup_steps, total_steps))
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "frequency": 1},
        }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/sign_ddpm.yaml")
    parser.add_argument("--resume", default=None, help="path to a .ckpt to resume from")
    parser.add_argument("--logdir", default="logs")
    args = parser.parse_args()

    with open(args.config) as f:
        config = yaml.safe_load(f)

    pl.seed_everything(23)
    model = LitDiffusion(**config["model"])

    data_cfg = config["data"]
    train_ds = KeyframeDataset(data_cfg["root"], split="train", size=config["model"]["image_size"])
    val_ds = KeyframeDataset(data_cfg["root"], split="val", size=config["model"]["image_size"])
    train_loader = DataLoader(train_ds, batch_size=data_cfg["batch_size"], shuffle=True,
                              num_workers=data_cfg["num_workers"], drop_last=True, persistent_workers=True)
    val_loader = DataLoader(val_ds, batch_size=data_cfg["batch_size"], num_workers=2)

    trainer_cfg = config["trainer"]
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=trainer_cfg["max_epochs"],
        precision=trainer_cfg["precision"],
        accumulate_grad_batches=trainer_cfg["accumulate_grad_batches"],
        gradient_clip_val=trainer_cfg["gradient_clip_val"],
        check_val_every_n_epoch=trainer_cfg["check_val_every_n_epoch"],
        logger=TensorBoardLogger(args.logdir, name="sign_ddpm"),
        callbacks=[
            ModelCheckpoint(save_last=True, every_n_epochs=5),
            LearningRateMonitor(logging_interval="step"),
        ],
    )
    trainer.fit(model, train_loader, val_loader, ckpt_path=args.resume)


if __name__ == "__main__":
    main()
