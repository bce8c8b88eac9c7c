"""Samples a trainer writes as image or video files during the run (``samples/step_500.png``,
``sample_0.mp4``): found by name and time, read back frame by frame.

A file counts when it was written after the run started, has an image or video suffix, and its name
contains ``sample`` or it lies in a folder whose name does (``samples/``). Each is read with imageio
(PIL for images and GIFs, PyAV for videos); a frame whose pixels are all the same value (standard
deviation under ``BLANK_STD`` on a 0-255 scale: codecs add a little noise) is blank, which is how
NaN samples look once converted to pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".mkv")
BLANK_STD = 1.0
MAX_FILES = 16  # the newest ones are read
MAX_FRAMES = 64  # per file
MAX_DEPTH = 5  # folders below a searched root
MAX_ENTRIES = 20000  # directory entries looked at per root
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "site-packages", ".probe_site", "snapshots"}


@dataclass
class MediaFile:
    path: str
    frames: int = 0
    shape: List[int] = field(default_factory=list)  # of the first frame
    blank_frames: List[int] = field(default_factory=list)  # frame indices
    blank_value: Optional[float] = None  # the value of the first blank frame
    error: str = ""  # why it does not read back

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "frames": self.frames,
            "shape": self.shape,
            "blank_frames": self.blank_frames[:16],
            "error": self.error,
        }


def is_sample_name(path: Path, every_media_file: bool = False) -> bool:
    """An image or video whose name, or the name of a folder it is in (``path`` is relative to the folder
    searched), contains ``sample``."""
    if path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        return False
    return every_media_file or any("sample" in part.lower() for part in path.parts[-3:])


def find_sample_media(roots: Iterable[Path], since: float, every_media_file: bool = False) -> List[Path]:
    """Sample images and videos under ``roots`` (named by their path below the root; with
    ``every_media_file`` any image or video: a --sample-cmd's own output folder) modified at or after
    ``since`` (time.time()), newest last, at most ``MAX_FILES``. Hidden folders, virtual environments and
    the probe's own files are skipped."""
    found: Dict[str, float] = {}
    for root in roots:
        for path, mtime in _walk(Path(root), since, every_media_file):
            found[str(path.resolve())] = mtime
    newest = sorted(found.items(), key=lambda item: item[1])[-MAX_FILES:]
    return [Path(p) for p, _ in newest]


def _walk(root: Path, since: float, every_media_file: bool) -> Iterable[tuple]:
    seen = 0
    stack = [(root, 0)]
    while stack and seen < MAX_ENTRIES:
        folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if entry.is_dir(follow_symlinks=False):
                if depth < MAX_DEPTH and entry.name not in _SKIP_DIRS and not entry.name.startswith("."):
                    stack.append((Path(entry.path), depth + 1))
                continue
            path = Path(entry.path)
            if not is_sample_name(path.relative_to(root), every_media_file):
                continue
            try:
                mtime = entry.stat().st_mtime
            except OSError:
                continue
            if mtime >= since:
                yield path, mtime


def inspect_media(path: Path) -> MediaFile:
    """Frames, shape and blank frames of one file; ``error`` when it does not decode."""
    import imageio.v3 as iio
    import numpy as np

    media = MediaFile(str(path))
    try:
        for index, frame in enumerate(iio.imiter(path)):
            if index >= MAX_FRAMES:
                break
            pixels = np.asarray(frame)
            if index == 0:
                media.shape = list(pixels.shape)
            media.frames += 1
            _note_blank(media, index, pixels)
    except Exception as exc:  # any decoder error: the file is not a readable image or video
        media.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if not media.frames and not media.error:
        media.error = "no frame"
    return media


def _note_blank(media: MediaFile, index: int, pixels: Any) -> None:
    import numpy as np

    values = pixels.astype(np.float64)
    if np.issubdtype(pixels.dtype, np.integer):
        values *= 255.0 / np.iinfo(pixels.dtype).max
    if not np.isfinite(values).all() or values.std() < BLANK_STD:
        media.blank_frames.append(index)
        if media.blank_value is None:
            media.blank_value = float(np.nan_to_num(values).mean())


def describe(files: Sequence[MediaFile]) -> str:
    """'3 files (png, mp4): 18 frames, first 32x32x3', for the sample row."""
    kinds = sorted({Path(f.path).suffix.lower().lstrip(".") for f in files})
    frames = sum(f.frames for f in files)
    first = next((f.shape for f in files if f.shape), [])
    return f"{len(files)} sample file{'s' if len(files) != 1 else ''} ({', '.join(kinds)}): {frames} frames" + (
        f", first {'x'.join(map(str, first))}" if first else ""
    )


def problems(files: Sequence[MediaFile]) -> List[str]:
    """What is wrong with the files: unreadable, or blank frames (named by file and frame)."""
    found = []
    for f in files:
        name = Path(f.path).name
        if f.error:
            found.append(f"{name} does not read back as an image or video ({f.error})")
        elif f.blank_frames:
            shown = ", ".join(map(str, f.blank_frames[:5])) + (", ..." if len(f.blank_frames) > 5 else "")
            found.append(
                f"{name}: {len(f.blank_frames)} of {f.frames} frames blank (every pixel ~{f.blank_value:.0f}; "
                f"frames {shown}): NaN or constant samples"
            )
    return found
