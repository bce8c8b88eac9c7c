"""Video reading and writing: containers through PyAV, GIFs through Pillow, frame folders.

Tensors follow the model's convention: float32 ``[3, T, H, W]`` in ``[-1, 1]``.
"""

from __future__ import annotations

import functools
import os
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "VideoDecodeError",
    "list_frame_files",
    "read_video",
    "sample_indices",
    "write_frames",
    "write_video",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})

# Container suffix -> (FFmpeg muxer, encoders in order of preference). libx264 is
# first for .mp4 but some FFmpeg builds ship without it; mpeg4 is always built in.
_CONTAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4")),
    ".avi": ("avi", ("mpeg4",)),
    ".webm": ("webm", ("libvpx",)),
}
# Encoders without a constant-quality mode get a bit rate that is near-lossless at
# the small sizes this project trains on.
_BIT_RATE = 4_000_000


class VideoDecodeError(Exception):
    """A video file or frame folder could not be read; names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path}: {reason}")


def sample_indices(total: int, num_frames: int) -> np.ndarray:
    """Indices of ``num_frames`` frames spread uniformly over a clip of ``total`` frames.

    Each index is the centre of one of ``num_frames`` equal segments, so a clip of
    exactly ``num_frames`` frames is returned unchanged. A shorter clip keeps all its
    frames and repeats the last one, rather than stretching time.
    """
    if total < 1 or num_frames < 1:
        raise ValueError(f"need total >= 1 and num_frames >= 1, got {total} and {num_frames}")
    if total >= num_frames:
        return ((np.arange(num_frames) + 0.5) * (total / num_frames)).astype(np.int64)
    return np.concatenate([np.arange(total), np.full(num_frames - total, total - 1)])


def _natural_key(name: str) -> tuple:
    # "frame2" < "frame10": digit runs compare as numbers. re.split with a group
    # alternates text/number, so positions always hold comparable types.
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder in natural order (hidden files ignored)."""
    folder = Path(folder)
    files = [
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file()
        and not entry.name.startswith(".")
        and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Size that brings the shorter side to ``size`` and keeps the aspect ratio."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def _center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return frame[top : top + size, left : left + size]


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[3, T, H, W]`` in ``[-1, 1]``."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
    return video.float().div_(127.5).sub_(1.0).contiguous()


def _read_frame_folder(folder: Path, num_frames: int, image_size: int) -> np.ndarray:
    try:
        files = list_frame_files(folder)
    except OSError as err:
        raise VideoDecodeError(folder, f"cannot list the folder ({err.strerror})") from err
    if not files:
        raise VideoDecodeError(folder, f"the folder holds no frame images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    indices = sample_indices(len(files), num_frames)
    loaded: dict[int, np.ndarray] = {}  # a short clip repeats indices: load each once
    for i in np.unique(indices):
        try:
            with Image.open(files[i]) as image:
                rgb = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise VideoDecodeError(folder, f"frame {files[i].name} is not a readable image ({err})") from err
        rgb = rgb.resize(_scaled_size(*rgb.size, image_size), Image.Resampling.BILINEAR)
        loaded[int(i)] = _center_crop(np.asarray(rgb), image_size)
    return np.stack([loaded[int(i)] for i in indices])


def _read_container(path: Path, num_frames: int, image_size: int) -> np.ndarray:
    frames: list[np.ndarray] = []
    durations: list[int] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "the file has no video stream")
            stream = container.streams.video[0]
            is_gif = stream.codec_context.name == "gif"
            for frame in container.decode(stream):
                # Scale each frame as it is decoded so a long, large clip never sits
                # in memory at full resolution.
                size = _scaled_size(frame.width, frame.height, image_size)
                rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
                frames.append(_center_crop(rgb, image_size))
                durations.append(frame.duration or 0)
    except av.FFmpegError as err:
        raise VideoDecodeError(path, f"FFmpeg cannot decode it ({err})") from err
    if not frames:
        raise VideoDecodeError(path, "the video stream holds no frames")
    positions = np.arange(len(frames))
    if is_gif and min(durations) > 0:
        # GIF writers (Pillow, gifsicle) merge identical consecutive frames into one
        # longer frame; expanding by duration restores the original frame count.
        counts = np.maximum(1, np.rint(np.array(durations) / min(durations))).astype(np.int64)
        positions = np.repeat(positions, counts)
    chosen = positions[sample_indices(len(positions), num_frames)]
    return np.stack([frames[i] for i in chosen])


def read_video(path: str | os.PathLike, num_frames: int, image_size: int) -> torch.Tensor:
    """Read a video file or a folder of frame images as float32 ``[3, T, H, W]`` in ``[-1, 1]``.

    ``num_frames`` frames are sampled uniformly (see :func:`sample_indices`); each frame
    is resized so its shorter side is ``image_size`` and centre-cropped to a square.
    Raises :class:`VideoDecodeError` naming the file when it cannot be read.
    """
    if num_frames < 1 or image_size < 1:
        raise ValueError(f"num_frames and image_size must be >= 1, got {num_frames} and {image_size}")
    path = Path(path)
    if path.is_dir():
        frames = _read_frame_folder(path, num_frames, image_size)
    elif path.is_file():
        frames = _read_container(path, num_frames, image_size)
    else:
        raise VideoDecodeError(path, "no such file or folder")
    return _to_tensor(frames)


@functools.cache
def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def _encode_container(path: Path, frames: np.ndarray, fps: float) -> None:
    muxer, candidates = _CONTAINERS[path.suffix.lower()]
    encoder = next((name for name in candidates if _has_encoder(name)), None)
    if encoder is None:
        raise RuntimeError(f"cannot write {path}: this FFmpeg build has none of the encoders {candidates}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(
            f"cannot write {path}: {path.suffix} uses yuv420p, which needs an even width and height "
            f"(got {width}x{height}); write a .gif or a frame folder instead"
        )
    options = {"crf": "12"} if encoder == "libx264" else {}
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One thread: encoder output then depends only on the input, so the same
        # frames give byte-identical files on any machine.
        stream.codec_context.thread_count = 1
        if encoder != "libx264":
            stream.bit_rate = _BIT_RATE
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))


def _encode_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    # GIF stores delays in hundredths of a second; round here so every frame gets the
    # same delay (Pillow would truncate), which read_video relies on.
    delay_ms = 10 * max(1, round(100 / fps))
    images = [Image.fromarray(array) for array in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=delay_ms, loop=0)


def write_frames(path: str | os.PathLike, frames: np.ndarray, fps: float = 8) -> Path:
    """Write uint8 frames ``[T, H, W, 3]``; the suffix of ``path`` picks the format.

    ``.mp4`` (libx264, or mpeg4 where libx264 is missing), ``.avi`` (mpeg4), ``.webm``
    (VP8), ``.gif``, or no suffix for a folder of PNG frames ``00000.png, 00001.png, ...``.
    Files are written to a temporary name and renamed, so an interrupted write never
    leaves a truncated video behind.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {list(frames.shape)}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    if suffix == "":
        path.mkdir(parents=True, exist_ok=True)
        if list_frame_files(path):
            # Left-over frames would silently become part of the clip when it is read.
            raise FileExistsError(f"cannot write frames into {path}: the folder already holds images")
        for i, array in enumerate(frames):
            Image.fromarray(array).save(path / f"{i:05d}.png")
        return path
    if suffix != ".gif" and suffix not in _CONTAINERS:
        supported = ", ".join([*_CONTAINERS, ".gif", "'' (frame folder)"])
        raise ValueError(f"cannot write {path}: unsupported suffix {path.suffix!r}; use one of {supported}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        if suffix == ".gif":
            _encode_gif(partial, frames, fps)
        else:
            _encode_container(partial, frames, fps)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_video(path: str | os.PathLike, video: torch.Tensor | np.ndarray, fps: float = 8) -> Path:
    """Write a float video ``[3, T, H, W]`` in ``[-1, 1]`` (values outside are clipped).

    The suffix of ``path`` picks the format, as in :func:`write_frames`.
    """
    video = torch.as_tensor(video).detach()
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be [3, T, H, W], got {list(video.shape)}")
    frames = video.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return write_frames(path, frames.permute(1, 2, 3, 0).cpu().numpy(), fps)
