"""Configuration for the text-to-sign video diffusion model."""

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class ModelConfig:
    # Video dimensions
    image_size: int = 96
    num_frames: int = 16
    in_channels: int = 3

    # UNet3D
    model_channels: int = 80
    channel_mult: List[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 2
    attention_resolutions: List[int] = field(default_factory=lambda: [2, 4])
    num_heads: int = 4
    transformer_depth: int = 1
    dropout: float = 0.1

    # Text encoder (CLIP-style, DistilBERT backbone, frozen)
    text_encoder_name: str = "distilbert-base-uncased"
    context_dim: int = 512
    max_text_length: int = 64


@dataclass
class DDIMConfig:
    num_train_timesteps: int = 1000
    num_inference_steps: int = 100
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "cosine"  # Change from "linear"
    prediction_type: str = "v_prediction"  # From "epsilon"
    eta: float = 0.0
    clip_sample: bool = True


@dataclass
class TrainConfig:
    data_dir: str = "data/phoenix14t"
    output_dir: str = "outputs"
    batch_size: int = 16
    num_workers: int = 4

    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    num_epochs: int = 150
    warmup_steps: int = 2000  # Increase from 500 (first ~1.5 epochs)
    max_grad_norm: float = 0.5  # Down from 1.0 for gentler clipping
    mixed_precision: bool = True

    use_ema: bool = True
    lpips_weight: float = 0.1

    log_every: int = 50
    save_every: int = 10  # epochs
    sample_every: int = 5  # epochs
    num_samples: int = 4
    resume_from: Optional[str] = None
    seed: int = 42
    lpips_frames: int = 4  # frames per clip (evenly spaced) the LPIPS term compares; 0 = every frame
