"""Real face data in the toy set's contract: ingest -> detect, align, crop -> identity split.

``build_faces`` returns what ``toy_data.build_toy`` returns ('labelled' with a train/val
``split`` column, 'unlabelled', 'test'), so every later stage runs on faces unchanged. The three
reports (rows left out at ingestion, the per-image detection result, per-split label statistics)
are written as CSVs beside the workspace's other outputs and named in each set's meta.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.tasks.detect import detect_and_crop
from ausynth.tasks.identity_split import split_by_identity
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.ingest import ingest
from ausynth.tasks.store import atomic_folder, stable_hash


@dataclass
class FaceData:
    sets: dict[str, ImageSet]
    reports: dict[str, pd.DataFrame]  # ingest, detection, split


def prepare_faces(config: FaceDatasetConfig, workspace: Path) -> FaceData:
    """The three sets and the three reports of a face dataset config."""
    ingested = ingest(config)
    cache_dir = config.detection.cache_dir or Path(workspace) / "crops"
    crops, detection = detect_and_crop(ingested.frame, ingested.label_columns, config.detection, cache_dir)
    sets, stats = split_by_identity(crops, config.split)
    meta = {"dataset": "faces", "label_type": ingested.label_type, "classes": ingested.classes,
            "source": config.source.model_dump(mode="json")}
    for imageset in sets.values():
        imageset.meta.update(meta)
    return FaceData(sets, {"ingest": ingested.report, "detection": detection, "split": stats})


def write_reports(reports: dict[str, pd.DataFrame], folder: Path) -> dict[str, Path]:
    """Each report as ``<name>.csv`` in ``folder``, written atomically as one folder."""
    with atomic_folder(Path(folder)) as tmp:
        for name, table in reports.items():
            table.to_csv(tmp / f"{name}.csv", index=name == "split")
    return {name: Path(folder) / f"{name}.csv" for name in reports}


def build_faces(config: FaceDatasetConfig, workspace: Path = Path("workspace")) -> dict[str, ImageSet]:
    """'labelled' (``split`` train/val), 'unlabelled' and 'test', like ``build_toy``; reports under
    ``<workspace>/reports/faces-<config hash>/``."""
    data = prepare_faces(config, workspace)
    paths = write_reports(data.reports, Path(workspace) / "reports" / f"faces-{stable_hash(config)}")
    for imageset in data.sets.values():
        imageset.meta["reports"] = {name: str(path) for name, path in paths.items()}
    return data.sets
