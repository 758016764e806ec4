"""The one dataset format every stage reads and writes.

An image set is a folder with three files:

- ``images.npy``: all images as one uint8 array, shape (N, H, W, C), memory-mappable, so a
  stage loads a whole set in one read and never decodes images per training step;
- ``manifest.parquet``: one row per image, in the same order: ``subject`` (identity),
  ``origin`` (labelled, unlabelled, test, upsampled, pseudo, generated, ...), optional
  ``path`` of the source file, and one float column per label (AU presence 0/1, AU intensity
  scaled to 0..1, soft pseudo-labels); NaN where a row has no label;
- ``meta.json``: which columns are labels and free-form provenance.

Toy grids, face crops and generated images all take this form, so stages never special-case
where their data came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ausynth.tasks.store import atomic_folder

IMAGES = "images.npy"
MANIFEST = "manifest.parquet"
META = "meta.json"


@dataclass
class ImageSet:
    images: np.ndarray
    frame: pd.DataFrame
    label_columns: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.frame):
            raise ValueError(f"{len(self.images)} images but {len(self.frame)} manifest rows")
        missing = [c for c in self.label_columns if c not in self.frame.columns]
        if missing:
            raise ValueError(f"label columns {missing} are not in the manifest")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> np.ndarray:
        """Labels as float32 (N, K); NaN where unlabelled."""
        return self.frame[self.label_columns].to_numpy(dtype=np.float32, copy=True)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: np.ndarray | list[int]) -> "ImageSet":
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(np.ascontiguousarray(self.images[index]), self.frame.iloc[index].reset_index(drop=True),
                        list(self.label_columns), dict(self.meta))

    def with_labels(self, labels: np.ndarray, origin: str) -> "ImageSet":
        """A copy whose label columns hold ``labels`` and whose rows are tagged ``origin``."""
        frame = self.frame.copy()
        frame[self.label_columns] = labels.astype(np.float32)
        frame["origin"] = origin
        return ImageSet(self.images, frame, list(self.label_columns), dict(self.meta))


def concat(parts: list[ImageSet]) -> ImageSet:
    """Stack image sets that share label columns and image shape."""
    first = parts[0]
    for part in parts[1:]:
        if part.label_columns != first.label_columns or part.image_shape != first.image_shape:
            raise ValueError("cannot concatenate image sets with different labels or image shapes")
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    return ImageSet(np.concatenate([p.images for p in parts]), frame, list(first.label_columns), dict(first.meta))


def write(imageset: ImageSet, folder: Path) -> None:
    """Write the three files into an existing (usually temporary) folder."""
    np.save(folder / IMAGES, imageset.images)
    imageset.frame.to_parquet(folder / MANIFEST, index=False)
    meta = {"label_columns": imageset.label_columns, **imageset.meta}
    (folder / META).write_text(json.dumps(meta, indent=2, default=str))


def save(imageset: ImageSet, folder: Path) -> Path:
    """Write atomically: readers see the old set or the whole new one, never half of it."""
    with atomic_folder(Path(folder)) as tmp:
        write(imageset, tmp)
    return Path(folder)


def load(folder: Path, mmap: bool = False) -> ImageSet:
    folder = Path(folder)
    for name in (IMAGES, MANIFEST, META):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not an image set: {name} is missing")
    meta = json.loads((folder / META).read_text())
    label_columns = meta.pop("label_columns")
    images = np.load(folder / IMAGES, mmap_mode="r" if mmap else None)
    return ImageSet(images, pd.read_parquet(folder / MANIFEST), label_columns, meta)
