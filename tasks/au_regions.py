"""Where each label lives in an image: a toy grid cell, or the face region an AU moves.

A generated image asked to show one AU should change its source there and nowhere else. For the
toy grid the region is the AU's cell; for aligned face crops it is a fixed region map of FACS
AUs in relative coordinates (top, bottom, left, right as fractions of the crop; upper-face AUs
around brows and eyes, lower-face AUs around nose, cheeks, mouth and chin). A fixed map is
coarse but needs no landmarks, so it works on any aligned crop, including 48x48 ones too small
for a landmark detector.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from scipy.ndimage import gaussian_filter

from ausynth.tasks.errors import ConfigError
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.toy_data import CELL, GRID

BROWS, EYES, NOSE, CHEEKS, MOUTH, JAW = (0.05, 0.40, 0.10, 0.90), (0.20, 0.55, 0.05, 0.95), \
    (0.30, 0.70, 0.25, 0.75), (0.35, 0.75, 0.05, 0.95), (0.55, 0.95, 0.15, 0.85), (0.60, 1.00, 0.10, 0.90)
FACE_REGIONS = {
    1: BROWS, 2: BROWS, 4: BROWS, 5: EYES, 6: CHEEKS, 7: EYES, 9: NOSE, 10: MOUTH, 11: CHEEKS, 12: MOUTH,
    13: MOUTH, 14: MOUTH, 15: MOUTH, 16: MOUTH, 17: JAW, 18: MOUTH, 20: MOUTH, 21: JAW, 22: MOUTH, 23: MOUTH,
    24: MOUTH, 25: MOUTH, 26: JAW, 27: JAW, 28: MOUTH, 41: EYES, 42: EYES, 43: EYES, 44: EYES, 45: EYES, 46: EYES,
}
AU_NUMBER = re.compile(r"^AU0*(\d+)$")


def face_masks(label_columns: list[str], height: int, width: int) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of the FACS region of each AU column that has one in the map."""
    masks = {}
    for column in label_columns:
        match = AU_NUMBER.match(column)
        region = FACE_REGIONS.get(int(match.group(1))) if match else None
        if region is not None:
            top, bottom, left, right = region
            mask = np.zeros((height, width), dtype=bool)
            mask[int(top * height):int(np.ceil(bottom * height)), int(left * width):int(np.ceil(right * width))] = True
            masks[column] = mask
    return masks


def grid_masks(label_columns: list[str], grid: int, cell: int) -> dict[str, np.ndarray]:
    """The toy grid: label k (row-major) lives in cell k."""
    masks = {}
    for k, column in enumerate(label_columns):
        mask = np.zeros((grid * cell, grid * cell), dtype=bool)
        r, c = divmod(k, grid)
        mask[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = True
        masks[column] = mask
    return masks


REGION_MAPS = ("toy", "faces")  # the datasets' meta["dataset"] values that have a region map
FACE_SOFTNESS = 1 / 16  # face regions are blurred by this fraction of the crop's height: they are coarse


def region_map(data: ImageSet) -> str:
    """Which region map fits ``data``: 'toy' (grid cells) or 'faces' (the FACS map)."""
    name = data.meta.get("dataset")
    if name not in REGION_MAPS:
        raise ConfigError(f"generator.edit_regions needs images with a region map ({' or '.join(REGION_MAPS)}); "
                          f"these are from {name!r}: set generator.edit_regions to false")
    return name


def label_masks(map_name: str, label_columns: list[str], height: int, width: int) -> dict[str, np.ndarray]:
    """Where each label should change an image: its toy grid cell, or its FACS face region."""
    if map_name == "toy":
        return grid_masks(label_columns, GRID, CELL)
    return face_masks(label_columns, height, width)


def edit_regions(map_name: str, label_columns: list[str], height: int, width: int) -> np.ndarray:
    """(K, H, W) weights in [0, 1]: where an edit of each label may change the image.

    Toy cells are exact (the toy's rule puts a label in its cell and nowhere else); the face map's
    rectangles are blurred so that an edit fades out instead of ending in a seam. A label the map
    has no region for may change the whole image.
    """
    masks = label_masks(map_name, label_columns, height, width)
    weights = np.ones((len(label_columns), height, width), dtype=np.float32)
    for k, column in enumerate(label_columns):
        if column in masks:
            mask = masks[column].astype(np.float32)
            weights[k] = gaussian_filter(mask, sigma=FACE_SOFTNESS * height) if map_name == "faces" else mask
    return weights


def region_change(generated: ImageSet, pool: ImageSet, masks: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per target label: the mean absolute change (grey levels, 0..255) from the source inside the
    label's region and outside it, and their ratio (> 1: the edit sits where the AU lives)."""
    target = generated.frame["target"].to_numpy()
    sources = generated.frame["source_index"].to_numpy()
    rows = []
    for label, mask in masks.items():
        chosen = np.flatnonzero(target == label)
        if not len(chosen):
            continue
        diff = np.abs(generated.images[chosen].astype(np.float32) - pool.images[sources[chosen]]).mean(axis=-1)
        inside, outside = float(diff[:, mask].mean()), float(diff[:, ~mask].mean())
        rows.append({"target": label, "change_inside": inside, "change_outside": outside,
                     "inside_outside_ratio": inside / outside if outside > 0 else np.nan})
    return pd.DataFrame(rows, columns=["target", "change_inside", "change_outside", "inside_outside_ratio"]
                        ).set_index("target")


def target_spread(generated: ImageSet) -> float:
    """Mean absolute difference (grey levels) between the images one source gave for different targets:
    near 0 means the generator ignores the label it is asked for."""
    frame = generated.frame
    spreads = [generated.images[np.flatnonzero(frame["source_index"].to_numpy() == source)].astype(np.float32)
               for source in pd.unique(frame["source_index"])[:64]]
    return float(np.mean([np.abs(images - images.mean(axis=0)).mean() for images in spreads if len(images) > 1]))
