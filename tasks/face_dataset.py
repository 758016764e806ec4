"""Real face data in the toy set's contract: ingest -> detect, align, crop -> identity split.

``build_faces`` returns what ``toy_data.build_toy`` returns ('labelled' with a train/val
``split`` column, 'unlabelled', 'test'), so every later stage runs on faces unchanged; an
unlabelled pool configured alone gives its 'unlabelled' set only (``ausynth prepare`` crops it
ahead of a run). The three reports (rows left out at ingestion, the per-image detection result,
per-split label statistics; no split for a pool alone) are written as CSVs beside the
workspace's other outputs and named in each set's meta.

A labelled neutral set (``dataset.neutral``, e.g. JAFFE's neutral images) goes through the same
ingestion, cropping and checks as a fourth set, 'neutral': the faces the generator starts from.
Its images of val or test subjects are left out, as the pool's are, so no held-out face reaches
training through a generated image.

The labelled source and the unlabelled pool are cropped each with its own detection settings
(``FaceDatasetConfig.detection_for``) and checked each against ``max_bad_fraction``: rows left
out at ingestion and images that gave no crop (unreadable, no face, several faces skipped) count
together, since either way the row is lost. The labelled source is cropped first, so a source
that cannot work fails before a large pool is processed. A failing run writes its ingest and
detection reports first (to ``reports_folder``) and names them in the error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.tasks.detect import detect_and_crop
from ausynth.tasks.errors import DataError
from ausynth.tasks.identity_split import TooFewSubjectsError, split_by_identity
from ausynth.tasks.imageset import ImageSet, concat
from ausynth.tasks.ingest import SECTIONS, Ingested, Read, ingest, ingest_neutral
from ausynth.tasks.store import atomic_folder, stable_hash

log = logging.getLogger("ausynth")

SECTION_NAMES = {"source": "labelled source", "unlabelled": "unlabelled pool", "neutral": "neutral set"}
STATUS_NAMES = {"unreadable": "unreadable", "no_face": "no face found", "multiple_faces": "several faces, skipped"}


@dataclass
class FaceData:
    sets: dict[str, ImageSet]  # labelled, unlabelled, test; neutral where dataset.neutral is set
    reports: dict[str, pd.DataFrame]  # ingest, detection, split


def reports_folder(config: FaceDatasetConfig, workspace: Path) -> Path:
    """Where ``build_faces`` writes the reports, and where a run that fails on its data leaves them."""
    return Path(workspace) / "reports" / f"faces-{stable_hash(config.key_data())}"


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
    """The three (with a neutral set, four) sets and the three reports of a face dataset config."""
    ingested = ingest(config)
    neutral = None
    if config.neutral is not None:  # read before any image is cropped, so a bad neutral manifest fails fast
        neutral, report, ingested.read["neutral"] = ingest_neutral(config.neutral, config.max_bad_fraction)
        ingested.report = pd.concat([ingested.report, report], ignore_index=True)
    cache_dir = config.detection.cache_dir or Path(workspace) / "crops"
    folder = reports_folder(config, workspace)
    parts: dict[str, ImageSet] = {}
    detections: list[pd.DataFrame] = []

    def fail(message: str, kind: type[DataError] = DataError) -> DataError:
        """The error, once the reports it names are on disk (the store's temporary folder would vanish)."""
        write_reports({"ingest": ingested.report, "detection": pd.concat(detections, ignore_index=True)}, folder)
        return kind(message)

    def crop(section: str, rows: pd.DataFrame) -> ImageSet:
        """One section's crops, with its own detection settings and its own max_bad_fraction budget."""
        crops, detection = detect_and_crop(rows, ingested.label_columns, config.detection_for(section), cache_dir)
        detections.append(detection)
        read = ingested.read[section]
        problem = _check_crops(section, read, detection, config.max_bad_fraction, folder / "detection.csv")
        if problem is None and section == "source":
            problem = _no_labelled_crops(read, rows, detection, folder / "detection.csv")
        if problem is not None:
            raise fail(problem)
        return crops

    for section in (s for s in SECTIONS if s in ingested.read):
        parts[section] = crop(section, ingested.frame[ingested.frame["section"] == section].reset_index(drop=True))
    neutral_crops = None if neutral is None else crop(
        "neutral", neutral.reindex(columns=[*neutral.columns, *ingested.label_columns]))
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
    if neutral_crops is not None:
        sets["neutral"] = _neutral_set(neutral_crops, sets)
    meta = {"dataset": "faces", "label_type": ingested.label_type, "classes": ingested.classes,
            "source": None if config.source is None else config.source.model_dump(mode="json"),
            "ignored_columns": ingested.ignored}
    for imageset in sets.values():
        imageset.meta.update(meta)
    return FaceData(sets, reports)


def _neutral_set(crops: ImageSet, sets: dict[str, ImageSet]) -> ImageSet:
    """The neutral set's crops less those of val and test subjects: a generated image of a held-out face
    would show that face to the classifiers before their evaluation."""
    val = sets["labelled"].frame.loc[sets["labelled"].frame["split"] == "val", "subject"]
    held_out = set(val) | set(sets["test"].frame["subject"])
    keep = ~crops.frame["subject"].isin(held_out).to_numpy()
    if not keep.all():
        log.warning("neutral set: %d of %d images are of val or test subjects and are left out", int((~keep).sum()),
                    len(keep))
    if not keep.any():
        raise DataError(f"neutral set: every one of its {len(keep)} cropped images is of a val or test subject of "
                        "the labelled source, so none can be a generator source; use neutral faces of other people")
    neutral = crops.subset(np.flatnonzero(keep))
    neutral.frame["origin"] = "neutral"
    neutral.meta["detection"] = {"neutral": crops.meta["detection"]}
    return neutral


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
