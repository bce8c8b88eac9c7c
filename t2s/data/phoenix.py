"""RWTH-PHOENIX-Weather 2014T: German weather forecasts in DGS, with glosses and translations.

Expected layout under ``root`` (the ``PHOENIX-2014-T`` folder of the release)::

    annotations/manual/PHOENIX-2014-T.{train,dev,test}.corpus.csv
    features/fullFrame-210x260px/{train,dev,test}/{name}/images0001.png ...

The corpus files are ``|``-separated with columns
``name|video|start|end|speaker|orth|translation``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath

from .dataset import DatasetError, ManifestDataset, Row, read_table

__all__ = ["PhoenixDataset"]

SPLITS = ("train", "dev", "test")
TEXT_FIELDS = ("translation", "orth")
_GLOB_CHARS = frozenset("*?[")


class PhoenixDataset(ManifestDataset):
    """PHOENIX-2014-T clips with their German ``translation`` (default) or ``orth`` glosses."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        text_field: str = "translation",
        num_frames: int = 16,
        image_size: int = 64,
        skip_bad: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if text_field not in TEXT_FIELDS:
            raise ValueError(f"text_field must be one of {TEXT_FIELDS}, got {text_field!r}")
        root = Path(root)
        corpus = root / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"
        frames = root / "features" / "fullFrame-210x260px" / split
        for needed in (corpus, frames):
            if not needed.exists():
                raise DatasetError(
                    f"PHOENIX-2014-T {split} split not found: {needed} is missing; root should be the "
                    "PHOENIX-2014-T folder that holds annotations/ and features/"
                )
        self.split = split
        self.text_field = text_field
        super().__init__(corpus, num_frames, image_size, skip_bad, root=frames)

    def _read_rows(self) -> list[Row]:
        # QUOTE_NONE: translations may contain quote characters, never the '|'.
        table = read_table(self.manifest, "|", (("name",), ("video",), (self.text_field,)), csv.QUOTE_NONE)
        return [Row(line, self._frame_folder(v["name"], v["video"]), v[self.text_field]) for line, v in table]

    def _frame_folder(self, name: str, video: str) -> str:
        """Folder of a clip's frames, relative to the split folder.

        The ``video`` column holds a glob such as ``{name}/1/*.png`` (the PHOENIX-2014
        layout), while the 2014T release stores the frames directly in ``{name}/``:
        use the folder of the glob where it exists, else ``{name}``.
        """
        pattern = PurePosixPath(video)
        folder = pattern.parent if _GLOB_CHARS & set(pattern.name) else pattern
        if folder.parts and (self.root / folder).is_dir():
            return str(folder)
        return name
