"""How2Sign: instructional videos in American Sign Language, cut into sentence clips.

Reads ``how2sign_realigned_{split}.csv`` (tab-separated; columns VIDEO_ID, VIDEO_NAME,
SENTENCE_ID, SENTENCE_NAME, START_REALIGNED, END_REALIGNED, SENTENCE) and the clips
``{SENTENCE_NAME}.mp4``. The clips are already cut to the realigned times, so the
START/END columns are not needed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .dataset import DatasetError, ManifestDataset, Row, read_table

__all__ = ["How2SignDataset"]

SPLITS = ("train", "val", "test")


def _first_existing(candidates: list[Path], what: str, hint: str) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = "\n  ".join(str(c) for c in candidates)
    raise DatasetError(f"How2Sign {what} not found; looked for:\n  {tried}\n{hint}")


class How2SignDataset(ManifestDataset):
    """How2Sign sentence clips with their English sentence.

    ``csv_path`` and ``clips_dir`` default to the first existing of the usual places
    under ``root``: the CSV at the top or in the official
    ``sentence_level/{split}/text/en/raw_text/re_aligned/``; the clips in ``clips/``,
    ``{split}_rgb_front_clips/raw_videos/`` (the unzipped download) or
    ``sentence_level/{split}/rgb_front/raw_videos/``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        num_frames: int = 16,
        image_size: int = 64,
        skip_bad: bool = False,
        csv_path: str | os.PathLike | None = None,
        clips_dir: str | os.PathLike | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        name = f"how2sign_realigned_{split}.csv"
        if csv_path is None:
            csv_path = _first_existing(
                [root / name, root / "sentence_level" / split / "text" / "en" / "raw_text" / "re_aligned" / name],
                f"{split} annotations",
                "Pass csv_path= to point at the file.",
            )
        if clips_dir is None:
            clips_dir = _first_existing(
                [
                    root / "clips",
                    root / f"{split}_rgb_front_clips" / "raw_videos",
                    root / "sentence_level" / split / "rgb_front" / "raw_videos",
                ],
                f"{split} clips folder",
                "Pass clips_dir= to point at the folder of {SENTENCE_NAME}.mp4 files.",
            )
        self.split = split
        super().__init__(csv_path, num_frames, image_size, skip_bad, root=clips_dir)

    def _read_rows(self) -> list[Row]:
        # QUOTE_NONE: sentences contain quote characters, never a tab.
        table = read_table(self.manifest, "\t", (("SENTENCE_NAME",), ("SENTENCE",)), csv.QUOTE_NONE)
        return [Row(line, f"{v['SENTENCE_NAME']}.mp4", v["SENTENCE"]) for line, v in table]
