"""Configuration of a reference-style trainer: dataclass defaults, one section per concern."""

from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    model_channels: int = 96


@dataclass
class DataConfig:
    image_size: int = 64
    num_frames: int = 16


@dataclass
class TrainConfig:
    learning_rate: float = 5e-5
    num_epochs: int = 150
    beta_schedule: str = "linear"
    prediction_type: str = "v_prediction"
    # zero terminal SNR (Lin et al. 2023): the schedule ends in pure noise, as sampling starts; needs v-prediction
    rescale_betas_zero_snr: bool = True
    num_train_timesteps: int = 100


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
