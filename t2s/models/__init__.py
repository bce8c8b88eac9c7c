"""Models: UNet3D video denoiser with DiT blocks, and the frozen-backbone text encoder."""

from t2s.models.text_encoder import (
    TextEncoder,
    TextEncoderConfig,
    TextEncoderLoadError,
    TextEncoderOutput,
)
from t2s.models.unet3d import UNet3D, UNet3DConfig, count_parameters

__all__ = [
    "TextEncoder",
    "TextEncoderConfig",
    "TextEncoderLoadError",
    "TextEncoderOutput",
    "UNet3D",
    "UNet3DConfig",
    "count_parameters",
]
