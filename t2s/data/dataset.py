"""Text/video datasets described by a manifest: one row per clip, a video and its text.

:class:`ManifestDataset` holds everything that turns rows into samples: path
resolution, up-front validation, decoding, skipping bad rows and error messages that
name the manifest file and the line. Dataset layouts (PHOENIX, How2Sign) subclass it
and only override :meth:`ManifestDataset._read_rows`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset

from .video_io import VideoDecodeError, read_video

__all__ = ["DatasetError", "ManifestDataset", "Row", "Sample", "SkippedSample", "collate"]

logger = logging.getLogger(__name__)

_MANIFEST_FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".ndjson": None}
_SHOWN_PROBLEMS = 10  # bad rows listed in one error message; the rest are counted


class DatasetError(Exception):
    """A manifest or one of its rows cannot be used; the message says where and what to do."""


@dataclass(frozen=True)
class Row:
    """A manifest row as written, before its video is looked up."""

    line: int  # 1-based line in the manifest file, as an editor shows it
    video: str
    text: str


@dataclass(frozen=True)
class Sample:
    """A row whose video exists: ``video`` is a file or a frame folder."""

    line: int
    video: Path
    text: str


@dataclass(frozen=True)
class SkippedSample:
    """A row left out because of ``skip_bad``, and why."""

    line: int
    video: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def read_table(
    path: Path, delimiter: str, columns: Sequence[Sequence[str]], quoting: int = csv.QUOTE_MINIMAL
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, {column: value})`` for the data rows of a delimited text file.

    ``columns`` lists the required columns, each as alternative names (the first one
    present is used and reported under the first name). Raises :class:`DatasetError`
    for a missing column or a row whose field count differs from the header's.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a BOM
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}: the file is empty; expected a header line with {_describe(columns)}")
        header = [name.strip() for name in header]
        chosen = {}
        for names in columns:
            found = next((name for name in names if name in header), None)
            if found is None:
                raise DatasetError(
                    f"{path}: missing column {names[0]!r}; the header has {', '.join(header) or 'no names'}; "
                    f"expected {_describe(columns)}"
                )
            chosen[names[0]] = header.index(found)
        line = reader.line_num + 1
        for values in reader:
            if values and any(v.strip() for v in values):  # blank lines are not rows
                if len(values) != len(header):
                    hint = f"; quote values that contain {delimiter!r}" if len(values) > len(header) else ""
                    raise DatasetError(
                        f"{path}, line {line}: the row has {len(values)} fields but the header has {len(header)}{hint}"
                    )
                yield line, {key: values[index].strip() for key, index in chosen.items()}
            line = reader.line_num + 1  # a quoted field may span lines: count from the reader


def _describe(columns: Sequence[Sequence[str]]) -> str:
    return ", ".join(names[0] + "".join(f" (or {alt})" for alt in names[1:]) for names in columns)


class ManifestDataset(Dataset):
    """Clips and texts listed in a CSV/TSV or JSONL manifest.

    Each row names a video file or a folder of frame images (column ``video``, or
    ``path``) and its ``text``. Relative paths are resolved against ``root``, by
    default the manifest's folder. Items are ``{"video": FloatTensor [3, T, H, W] in
    [-1, 1], "text": str}``.

    Rows whose video is missing raise :class:`DatasetError` at construction; so does
    an undecodable video when it is loaded. With ``skip_bad=True`` such rows are left
    out instead (missing ones at construction, undecodable ones at load time, where
    the next readable sample takes their place) and recorded in :attr:`skipped`.
    ``skipped`` is per process: with DataLoader workers, load-time skips are logged
    by the worker that met them.
    """

    _ROW_COLUMNS = (("video", "path"), ("text",))

    def __init__(
        self,
        manifest: str | os.PathLike,
        num_frames: int = 16,
        image_size: int = 64,
        skip_bad: bool = False,
        root: str | os.PathLike | None = None,
    ) -> None:
        if num_frames < 1 or image_size < 1:
            raise ValueError(f"num_frames and image_size must be >= 1, got {num_frames} and {image_size}")
        self.manifest = Path(manifest)
        # Absolute, so messages about missing videos say exactly where we looked.
        self.root = (Path(root) if root is not None else self.manifest.parent).absolute()
        self.num_frames = num_frames
        self.image_size = image_size
        self.skip_bad = skip_bad
        self.skipped: list[SkippedSample] = []
        self._undecodable: set[int] = set()
        if self.manifest.is_dir():
            inside = sorted(p.name for p in self.manifest.iterdir() if p.suffix.lower() in _MANIFEST_FORMATS)
            raise DatasetError(
                f"{self.manifest} is a folder; pass the manifest file itself"
                + (f" (found here: {', '.join(inside)})" if inside else "")
            )
        if not self.manifest.is_file():
            raise DatasetError(
                f"manifest not found: {self.manifest}; pass a .csv, .tsv or .jsonl file with columns "
                f"{_describe(self._ROW_COLUMNS)}"
            )
        rows = self._read_rows()
        if not rows:
            raise DatasetError(f"{self.manifest}: the manifest has no rows; add one row per clip")
        self.samples = self._check_rows(rows)

    def _read_rows(self) -> list[Row]:
        """Rows of the manifest; subclasses for other layouts override this."""
        suffix = self.manifest.suffix.lower()
        if suffix not in _MANIFEST_FORMATS:
            raise DatasetError(
                f"{self.manifest}: unknown manifest format {self.manifest.suffix!r}; use .csv, .tsv or .jsonl"
            )
        delimiter = _MANIFEST_FORMATS[suffix]
        if delimiter is None:
            return self._read_jsonl()
        return [
            Row(line, values["video"], values["text"])
            for line, values in read_table(self.manifest, delimiter, self._ROW_COLUMNS)
        ]

    def _read_jsonl(self) -> list[Row]:
        rows = []
        with open(self.manifest, encoding="utf-8-sig") as f:
            for line, content in enumerate(f, start=1):
                if not content.strip():
                    continue
                where = f"{self.manifest}, line {line}"
                try:
                    record = json.loads(content)
                except json.JSONDecodeError as err:
                    raise DatasetError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from err
                if not isinstance(record, dict):
                    raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
                video = record.get("video", record.get("path"))
                for key, value in (("video", video), ("text", record.get("text"))):
                    if value is None:
                        raise DatasetError(
                            f"{where}: missing key {key!r}; the row has keys {', '.join(record) or 'none'}; "
                            f"expected {_describe(self._ROW_COLUMNS)}"
                        )
                    if not isinstance(value, str):
                        raise DatasetError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
                rows.append(Row(line, video.strip(), record["text"].strip()))
        return rows

    def _check_rows(self, rows: list[Row]) -> list[Sample]:
        """Resolve video paths; a missing video is skipped or reported with every other one."""
        samples, problems = [], []
        for row in rows:
            if not row.text:
                # Not a video problem, so skip_bad does not hide it: the manifest is wrong.
                raise DatasetError(f"{self.manifest}, line {row.line}: the text is empty; every clip needs its text")
            if not row.video:
                reason = "no video path given"
            else:
                video = self.root / row.video
                if video.exists():
                    samples.append(Sample(row.line, video, row.text))
                    continue
                reason = f"video not found: {row.video} (looked for {video})"
            if self.skip_bad:
                self.skipped.append(SkippedSample(row.line, row.video, reason))
            else:
                problems.append(f"line {row.line}: {reason}")
        if problems:
            shown = "\n  ".join(problems[:_SHOWN_PROBLEMS])
            more = f"\n  ... and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
            raise DatasetError(
                f"{self.manifest}: {len(problems)} of {len(rows)} rows have no usable video:\n  {shown}{more}\n"
                "Fix the paths (relative paths start at "
                f"{self.root}), or pass skip_bad=True to leave these rows out."
            )
        if not samples:
            raise DatasetError(
                f"{self.manifest}: all {len(rows)} rows were skipped, e.g. {self.skipped[0]}; "
                f"relative paths start at {self.root}"
            )
        if self.skipped:
            logger.warning(
                "%s: skipped %d rows without a usable video, e.g. %s", self.manifest, len(self.skipped), self.skipped[0]
            )
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        count = len(self.samples)
        if not -count <= index < count:
            raise IndexError(f"index {index} out of range for {count} samples")
        index %= count
        # With skip_bad, an undecodable sample hands over to the next readable one, so
        # an epoch keeps its length and never stops half-way.
        for i in (j % count for j in range(index, index + count)):
            if i in self._undecodable:
                continue
            sample = self.samples[i]
            try:
                video = read_video(sample.video, self.num_frames, self.image_size)
            except VideoDecodeError as err:
                if not self.skip_bad:
                    raise DatasetError(
                        f"{self.manifest}, line {sample.line}: {err}. Fix or remove this row, "
                        "or pass skip_bad=True to skip unreadable videos."
                    ) from err
                self._undecodable.add(i)
                self.skipped.append(SkippedSample(sample.line, str(sample.video), err.reason))
                logger.warning("%s, line %d: skipped: %s", self.manifest, sample.line, err)
                continue
            return {"video": video, "text": sample.text}
        raise DatasetError(f"{self.manifest}: none of the {count} videos could be decoded; see .skipped")


def collate(batch: Sequence[dict]) -> dict:
    """DataLoader collate: videos stacked to ``[B, 3, T, H, W]``, texts kept as a list."""
    return {"video": torch.stack([item["video"] for item in batch]), "text": [item["text"] for item in batch]}
