"""Real face data in the toy set's contract: ingest -> detect, align, crop -> identity split.

``build_faces`` returns what ``toy_data.build_toy`` returns ('labelled' with a train/val
``split`` column, 'unlabelled', 'test'), so every later stage runs on faces unchanged; an
unlabelled pool configured alone gives its 'unlabelled' set only (``ausynth prepare`` crops it
ahead of a run). The three reports (rows left out at ingestion, the per-image detection result,
per-split label statistics; no split for a pool alone) are written as CSVs beside the
workspace's other outputs and named in each set's meta.

The labelled source and the unlabelled pool are cropped each with its own detection settings
(``FaceDatasetConfig.detection_for``) and checked each against ``max_bad_fraction``: rows left
out at ingestion and images that gave no crop (unreadable, no face, several faces skipped) count
together, since either way the row is lost. The labelled source is cropped first, so a source
that cannot work fails before a large pool is processed. A failing run writes its ingest and
detection reports first (to ``reports_folder``) and names them in the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.tasks.detect import detect_and_crop
from ausynth.tasks.errors import DataError
from ausynth.tasks.identity_split import TooFewSubjectsError, split_by_identity
from ausynth.tasks.imageset import ImageSet, concat
from ausynth.tasks.ingest import SECTIONS, Ingested, Read, ingest
from ausynth.tasks.store import atomic_folder, stable_hash

SECTION_NAMES = {"source": "labelled source", "unlabelled": "unlabelled pool"}
STATUS_NAMES = {"unreadable": "unreadable", "no_face": "no face found", "multiple_faces": "several faces, skipped"}


@dataclass
class FaceData:
    sets: dict[str, ImageSet]
    reports: dict[str, pd.DataFrame]  # ingest, detection, split


def reports_folder(config: FaceDatasetConfig, workspace: Path) -> Path:
    """Where ``build_faces`` writes the reports, and where a run that fails on its data leaves them."""
    return Path(workspace) / "reports" / f"faces-{stable_hash(config)}"


def _lost(report: pd.DataFrame) -> str:
    """'180 unreadable, 15 no face found': the images without a crop, per reason."""
    counts = report.loc[~report["cropped"], "status"].value_counts()
    return ", ".join(f"{n} {STATUS_NAMES.get(status, status)}" for status, n in counts.items())


def _advice(report: pd.DataFrame, section: str) -> str:
    """What to do about the reasons present."""
    statuses = set(report.loc[~report["cropped"], "status"])
    advice = []
    if "unreadable" in statuses:
        advice.append("replace or remove the unreadable files")
    if "no_face" in statuses:
        advice.append(f"if the images are already face crops, set '{section}.detection: {{backend: none}}'; "
                      "else try detection.backend: face_alignment")
    if "multiple_faces" in statuses:
        advice.append("set multi_face: largest or central to keep one face of several")
    return "; ".join(advice + ["or raise max_bad_fraction"])


def _check_crops(section: str, read: Read, report: pd.DataFrame, limit: float, report_file: Path) -> str | None:
    """The error message when rows left out at ingestion and images without a crop pass ``limit``."""
    failed = report[~report["cropped"]]
    bad = read.left_out + len(failed)
    share = bad / max(read.rows, 1)
    if share <= limit:
        return None
    ingestion = f", and {read.left_out} rows were left out at ingestion" if read.left_out else ""
    examples = "; ".join(f"{r.path} ({r.reason})" for r in failed.head(3).itertuples())
    return (f"{SECTION_NAMES[section]} {read.where}: {len(failed)} of {len(report)} images gave no face crop "
            f"({_lost(report)}){ingestion}: {bad} of {read.rows} rows ({share:.1%}) are unusable, more than "
            f"max_bad_fraction {limit:.1%}. Each image's status and reason is in {report_file}; e.g. {examples}. "
            f"To go on: {_advice(report, section)}.")


def _no_labelled_crops(read: Read, frame: pd.DataFrame, report: pd.DataFrame, report_file: Path) -> str | None:
    """The error message when the labelled source has labelled images but none of them gave a crop."""
    labelled = (frame["origin"] == "labelled").to_numpy()
    if report.loc[labelled, "cropped"].any():
        return None
    return (f"labelled source {read.where}: none of its {int(labelled.sum())} labelled images gave a face crop "
            f"({_lost(report[labelled])}), so no subject is left to split into train/val/test. Each image's status "
            f"and reason is in {report_file}. To go on: {_advice(report[labelled], 'source')}.")


def prepare_faces(config: FaceDatasetConfig, workspace: Path) -> FaceData:
    """The three sets and the three reports of a face dataset config."""
    ingested = ingest(config)
    cache_dir = config.detection.cache_dir or Path(workspace) / "crops"
    folder = reports_folder(config, workspace)
    parts: dict[str, ImageSet] = {}
    detections: list[pd.DataFrame] = []

    def fail(message: str, kind: type[DataError] = DataError) -> DataError:
        """The error, once the reports it names are on disk (the store's temporary folder would vanish)."""
        write_reports({"ingest": ingested.report, "detection": pd.concat(detections, ignore_index=True)}, folder)
        return kind(message)

    for section in (s for s in SECTIONS if s in ingested.read):
        rows = ingested.frame[ingested.frame["section"] == section].reset_index(drop=True)
        crops, detection = detect_and_crop(rows, ingested.label_columns, config.detection_for(section), cache_dir)
        parts[section] = crops
        detections.append(detection)
        read = ingested.read[section]
        problem = _check_crops(section, read, detection, config.max_bad_fraction, folder / "detection.csv")
        if problem is None and section == "source":
            problem = _no_labelled_crops(read, rows, detection, folder / "detection.csv")
        if problem is not None:
            raise fail(problem)
    crops = concat(list(parts.values()))
    crops.meta["detection"] = {section: part.meta["detection"] for section, part in parts.items()}
    reports = {"ingest": ingested.report, "detection": pd.concat(detections, ignore_index=True)}
    if config.source is None:  # a pool alone: cropped, with nobody to split
        sets = {"unlabelled": crops}
    else:
        try:
            sets, reports["split"] = split_by_identity(crops, config.split)
        except TooFewSubjectsError as err:
            raise fail(f"{err}. {_lost_labelled(ingested, detections[0], folder / 'detection.csv')}",
                       TooFewSubjectsError) from None
    meta = {"dataset": "faces", "label_type": ingested.label_type, "classes": ingested.classes,
            "source": None if config.source is None else config.source.model_dump(mode="json"),
            "ignored_columns": ingested.ignored}
    for imageset in sets.values():
        imageset.meta.update(meta)
    return FaceData(sets, reports)


def _lost_labelled(ingested: Ingested, detection: pd.DataFrame, report_file: Path) -> str:
    """Where the labelled rows of the source went, for a split that found too few subjects."""
    labelled = (ingested.frame.loc[ingested.frame["section"] == "source", "origin"] == "labelled").to_numpy()
    lost = detection[labelled & ~detection["cropped"].to_numpy()]
    read = ingested.read["source"]
    return (f"Of the {read.rows} rows of the labelled source {read.where}, {read.left_out} were left out at "
            f"ingestion, {int(labelled.sum())} are labelled, and {len(lost)} of those gave no face crop"
            + (f" ({_lost(lost)}; see {report_file})" if len(lost) else "") + ".")


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
    paths = write_reports(data.reports, reports_folder(config, workspace))
    for imageset in data.sets.values():
        imageset.meta["reports"] = {name: str(path) for name, path in paths.items()}
    return data.sets
