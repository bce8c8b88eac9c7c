"""Data for text-to-sign video diffusion: video IO, manifest datasets, PHOENIX-2014-T,
How2Sign and a procedural synthetic signer."""

from .dataset import DatasetError, ManifestDataset, collate
from .how2sign import How2SignDataset
from .phoenix import PhoenixDataset
from .video_io import VideoDecodeError, read_video, write_video

__all__ = [
    "GLOSSES",
    "DatasetError",
    "How2SignDataset",
    "ManifestDataset",
    "PhoenixDataset",
    "VideoDecodeError",
    "collate",
    "generate_synthetic_dataset",
    "read_video",
    "write_video",
]


def __getattr__(name: str):
    # Imported on first use: importing t2s.data.synthetic here would make
    # `python -m t2s.data.synthetic` run a module that is already imported (runpy warns).
    if name in ("GLOSSES", "generate_synthetic_dataset"):
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
