"""Stage 1 on real faces: read a user's labels into one manifest, whatever form they came in.

Three sources (a CSV manifest, a folder with a sub-folder per emotion, OpenFace 2 output) are
first read into the same raw table (``path``, ``subject``, raw label columns, and where each row
came from), then normalised by one routine, so every source gets the same checks:

- AU columns named ``AU01``, ``AU1``, ``au_12``, ``AU01_r`` or ``AU01_c`` become ``AU1``,
  ``AU12``, ...; ``_c`` columns and columns holding only 0/1 are presence, ``_r`` columns and
  other numeric columns are intensities. OpenFace ``_r`` columns are on FACS' 0-5 scale; a bare
  intensity column is taken as 0-5 when any value exceeds 1, else as already 0..1. Intensities
  are stored scaled to 0..1.
- Emotions are one-hot float columns ``emotion_<class>`` (names normalised: angry -> anger,
  happy -> happiness, ...), with the text kept in an ``emotion`` column.
- Valence and arousal stay on [-1, 1].

A row whose label columns are all empty goes to the unlabelled pool. A row that cannot be used
(no file, a value that is not a number, a label out of range, a duplicate) is left out and
reported with its row number and the reason; the run goes on and fails only when the share of
such rows passes ``max_bad_fraction``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ausynth.configs.faces import FaceDatasetConfig, SourceConfig, UnlabelledConfig

log = logging.getLogger("ausynth")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
PATH_COLUMNS = ("path", "file", "filename", "image", "image_path")
SUBJECT_COLUMNS = ("subject", "subject_id", "identity", "person")
EMOTION_COLUMNS = ("emotion", "expression")
VA_COLUMNS = ("valence", "arousal")
AU_HEADER = re.compile(r"^AU[_ ]?0*(\d+)(?:_([rc]))?$", re.IGNORECASE)
EMOTION_SYNONYMS = {
    "angry": "anger", "happy": "happiness", "joy": "happiness", "sad": "sadness", "surprised": "surprise",
    "fearful": "fear", "scared": "fear", "disgusted": "disgust", "contemptuous": "contempt", "neu": "neutral",
}
INTENSITY_MAX = 5.0
REPORT_COLUMNS = ["source", "row", "path", "column", "reason"]
# Bookkeeping columns of the raw table: the label file and its 1-based line (the header is line
# 1) a row came from, and the absolute image path ('path' stays as written, for the report).
SOURCE, ROW, FILE = "_source", "_row", "_file"


class IngestError(ValueError):
    """Too many unusable rows, or labels the pipeline cannot interpret."""


@dataclass
class Ingested:
    """The manifest (absolute ``path``, ``subject``, ``origin``, labels) and what went wrong."""

    frame: pd.DataFrame
    label_columns: list[str]
    label_type: str
    report: pd.DataFrame
    classes: list[str] = field(default_factory=list)


@dataclass
class _Problems:
    """Per-row problems, collected while the rows are checked; a row may have several."""

    rows: list[dict] = field(default_factory=list)

    def add(self, raw: pd.DataFrame, mask: pd.Series, column: str | None, reasons: pd.Series | str) -> None:
        for index in mask[mask].index:
            reason = reasons if isinstance(reasons, str) else reasons.loc[index]
            self.rows.append({"index": index, "source": raw.at[index, SOURCE], "row": raw.at[index, ROW],
                              "path": raw.at[index, "path"], "column": column, "reason": reason})

    @property
    def bad_index(self) -> set:
        return {r["index"] for r in self.rows}

    def frame(self) -> pd.DataFrame:
        report = pd.DataFrame(self.rows, columns=["index", *REPORT_COLUMNS]).sort_values("index", kind="stable")
        return report.drop(columns="index").astype({"row": "Int64"}).reset_index(drop=True)


# ----------------------------------------------------------------------------- raw tables

def _pick(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[n] for n in names if n in lowered), None)


def subject_from_name(names: pd.Series, regex: str | None) -> pd.Series:
    """The subject by ``regex`` (its 'subject' group, else its first group) on each file name."""
    if regex is None:
        return pd.Series(np.nan, index=names.index, dtype=object)
    pattern = re.compile(regex)
    group = "subject" if "subject" in pattern.groupindex else 1

    def one(name: str) -> str | float:
        match = pattern.search(name)
        return match.group(group) if match and match.group(group) else np.nan

    return names.map(lambda p: one(Path(str(p)).name)).astype(object)


def read_manifest(path: Path, image_root: Path | None, subject_regex: str | None) -> pd.DataFrame:
    """A CSV manifest as a raw table; every value is kept as text until it is checked."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
    path_column = _pick(list(table.columns), PATH_COLUMNS)
    if path_column is None:
        raise IngestError(f"{path}: no image path column; expected one of {list(PATH_COLUMNS)}, "
                          f"found {list(table.columns)}")
    raw = table.rename(columns={path_column: "path"})
    subject_column = _pick(list(raw.columns), SUBJECT_COLUMNS)
    subject = raw.pop(subject_column).str.strip() if subject_column else pd.Series("", index=raw.index)
    subject = subject.replace("", np.nan).astype(object)
    raw.insert(1, "subject", subject.fillna(subject_from_name(raw["path"], subject_regex)))
    raw["path"] = raw["path"].str.strip()
    raw[SOURCE] = path.name
    raw[ROW] = np.arange(len(raw)) + 2
    raw[FILE] = _absolute(raw["path"], Path(image_root) if image_root is not None else path.parent)
    return raw


def _absolute(paths: pd.Series, root: Path) -> pd.Series:
    """Paths relative to ``root`` made absolute; absolute ones stay as they are."""
    root = Path(root).absolute()
    return paths.astype(str).str.strip().map(lambda p: str(root / p))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def read_folder(folder: Path, subject_regex: str | None) -> pd.DataFrame:
    """Images under ``folder``; the first sub-folder of each is its emotion, files at the top are unlabelled."""
    if not folder.is_dir():
        raise IngestError(f"image folder {folder} does not exist")
    files = _images_under(folder)
    relative = [f.relative_to(folder) for f in files]
    raw = pd.DataFrame({"path": [str(r) for r in relative]})
    raw.insert(1, "subject", subject_from_name(raw["path"], subject_regex))
    raw["emotion"] = [r.parts[0] if len(r.parts) > 1 else "" for r in relative]
    raw[SOURCE] = folder.name
    raw[ROW] = np.nan
    raw[FILE] = [str(f.absolute()) for f in files]
    return raw


def _read_openface_csv(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
    table[SOURCE] = path.name
    table[ROW] = np.arange(len(table)) + 2
    return table


def _best_face(table: pd.DataFrame) -> pd.DataFrame:
    """Of several faces OpenFace found in one image, the one it is most confident about."""
    if "confidence" not in table.columns or len(table) < 2:
        return table.head(1)
    confidence = pd.to_numeric(table["confidence"], errors="coerce").fillna(-1)
    return table.loc[[confidence.idxmax()]]


def read_openface(location: Path, image_root: Path, subject_regex: str | None) -> pd.DataFrame:
    """OpenFace 2 CSVs joined to their images, as a raw table.

    A CSV with a ``frame`` column (FeatureExtraction on an image folder) describes the images of
    ``image_root/<csv stem>/`` (or of ``image_root``), frame k being the k-th by name; its stem is
    the subject unless ``subject_regex`` says otherwise. A CSV without one (FaceLandmarkImg)
    describes the image of the same stem.
    """
    csvs = sorted(location.glob("*.csv")) if location.is_dir() else [location]
    if not csvs:
        raise IngestError(f"no OpenFace CSV at {location}")
    by_stem = {p.stem: p for p in _images_under(image_root)}
    parts = []
    for csv in csvs:
        table = _read_openface_csv(csv)
        if "frame" in table.columns:
            folder = image_root / csv.stem if (image_root / csv.stem).is_dir() else image_root
            images = [p for p in _images_under(folder) if p.parent == folder]
            frame = pd.to_numeric(table["frame"], errors="coerce")
            known = frame.between(1, len(images))
            table["path"] = [str(images[int(k) - 1]) if ok else f"{folder}/<frame {table.at[i, 'frame']}>"
                             for i, k, ok in zip(table.index, frame, known)]
            subject = pd.Series(csv.stem, index=table.index, dtype=object) if subject_regex is None else np.nan
        else:
            table = _best_face(table)
            image = by_stem.get(csv.stem)
            table["path"] = str(image) if image is not None else f"{image_root}/{csv.stem}.<no image>"
            subject = np.nan
        table["subject"] = subject
        table["subject"] = table["subject"].fillna(subject_from_name(table["path"], subject_regex))
        parts.append(table)
    raw = pd.concat(parts, ignore_index=True)
    raw[FILE] = _absolute(raw["path"], image_root)
    return raw


# ----------------------------------------------------------------------------- normalisation

@dataclass
class _AU:
    number: int
    column: str
    kind: str  # "presence" or "intensity"
    scale: float  # divide by this to reach 0..1


def _numbers(raw: pd.DataFrame, column: str, problems: _Problems) -> pd.Series:
    """A column as floats; a non-empty value that is not a number is a problem of its row."""
    text = raw[column].astype(str).str.strip()
    values = pd.to_numeric(text.where(text != "", np.nan), errors="coerce")
    bad = values.isna() & (text != "") & (text.str.lower() != "nan")
    problems.add(raw, bad, column, text.map(lambda v: f"cannot parse {v!r} as a number"))
    return values


def _au_columns(values: dict[str, pd.Series]) -> list[_AU]:
    """Which columns are AUs, of which kind and scale (from the values that parse as numbers)."""
    found: list[_AU] = []
    for column, column_values in values.items():
        match = AU_HEADER.match(column.strip())
        if not match:
            continue
        number, suffix = int(match.group(1)), (match.group(2) or "").lower()
        if suffix == "c" or (not suffix and column_values.dropna().isin([0.0, 1.0]).all()):
            au = _AU(number, column, "presence", 1.0)
        else:
            au = _AU(number, column, "intensity", INTENSITY_MAX if suffix == "r" else 0.0)
        twin = next((other for other in found if (other.number, other.kind) == (au.number, au.kind)), None)
        if twin is not None:
            raise IngestError(f"columns {twin.column!r} and {column!r} both give AU{number} {au.kind}: keep one")
        found.append(au)
    bare = [au for au in found if au.scale == 0.0]
    bare_max = max((values[au.column].where(values[au.column] <= INTENSITY_MAX).max() for au in bare), default=0.0)
    for au in bare:
        au.scale = INTENSITY_MAX if bare_max > 1 else 1.0
    return found


def _range_check(raw: pd.DataFrame, values: pd.Series, column: str, low: float, high: float,
                 problems: _Problems, allowed: str) -> pd.Series:
    bad = values.notna() & ((values < low) | (values > high))
    problems.add(raw, bad, column, values.map(lambda v: f"{v:g} is outside {allowed}"))
    return values.where(~bad)


def _au_labels(raw: pd.DataFrame, aus: list[_AU], values: dict[str, pd.Series], label_type: str,
               threshold: float, problems: _Problems) -> pd.DataFrame:
    """One column per AU, ``AU<n>``: presence 0/1, or intensity scaled to 0..1."""
    labels = {}
    for number in sorted({au.number for au in aus}):
        mine = {au.kind: au for au in aus if au.number == number}
        if label_type == "au_presence" and "presence" in mine:
            au = mine["presence"]
            column = values[au.column]
            bad = column.notna() & ~column.isin([0.0, 1.0])
            problems.add(raw, bad, au.column, column.map(lambda v: f"{v:g} is not a presence label (0 or 1)"))
            labels[f"AU{number}"] = column.where(~bad)
        elif "intensity" in mine:
            au = mine["intensity"]
            scale_name = "0..5" if au.scale == INTENSITY_MAX else "0..1"
            column = _range_check(raw, values[au.column], au.column, 0.0, au.scale, problems, scale_name) / au.scale
            if label_type == "au_presence":
                column = (column * INTENSITY_MAX >= threshold).astype(float).where(column.notna())
            labels[f"AU{number}"] = column
    return pd.DataFrame(labels, index=raw.index, dtype=float)


def normalise_emotion(value: str) -> str:
    name = value.strip().lower()
    return EMOTION_SYNONYMS.get(name, name)


def _emotion_labels(raw: pd.DataFrame, column: str, classes: list[str] | None,
                    problems: _Problems) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """One-hot ``emotion_<class>`` columns, the normalised text, and the classes in order."""
    text = raw[column].astype(str).map(normalise_emotion).replace({"": np.nan, "nan": np.nan})
    if classes is None:
        classes = sorted(text.dropna().unique())
    else:
        unknown = text.notna() & ~text.isin(classes)
        problems.add(raw, unknown, column, text.map(lambda v: f"emotion {v!r} is not one of {classes}"))
        text = text.where(~unknown)
    onehot = pd.DataFrame({f"emotion_{c}": (text == c).astype(float) for c in classes}, index=raw.index)
    return onehot.where(text.notna()), text, classes


def _detect_label_type(aus: list[_AU], emotion: str | None, va: list[str], where: str, columns: list[str]) -> str:
    if aus:
        return "au_presence" if any(au.kind == "presence" for au in aus) else "au_intensity"
    if emotion is not None:
        return "emotion"
    if va:
        return "valence_arousal"
    raise IngestError(
        f"{where}: no label columns; expected AU columns (AU1, AU01, AU01_r, AU01_c), 'emotion' or "
        f"'valence'/'arousal', found {columns}. A source with no labels at all belongs under 'unlabelled:'"
    )


def _labels(raw: pd.DataFrame, config: FaceDatasetConfig, problems: _Problems,
            where: str) -> tuple[pd.DataFrame, str, list[str], pd.Series | None]:
    """The label columns of the configured (or detected) type, checked row by row."""
    columns = [c for c in raw.columns if c not in ("path", "subject", SOURCE, ROW, FILE)]
    emotion = _pick(columns, EMOTION_COLUMNS)
    va = [c for c in columns if c.lower() in VA_COLUMNS]
    numeric = [c for c in columns if AU_HEADER.match(c.strip())] + va
    aus = _au_columns({c: pd.to_numeric(raw[c], errors="coerce") for c in numeric})
    label_type = config.label_type if config.label_type != "auto" else _detect_label_type(aus, emotion, va, where,
                                                                                          columns)
    if label_type in ("au_presence", "au_intensity"):
        kinds = {"au_presence": ("presence", "intensity"), "au_intensity": ("intensity",)}[label_type]
        aus = [au for au in aus if au.kind in kinds]
        if not aus:
            raise IngestError(f"{where}: label_type {label_type} but no usable AU columns in {columns}")
        values = {au.column: _numbers(raw, au.column, problems) for au in aus}
        return _au_labels(raw, aus, values, label_type, config.presence_threshold, problems), label_type, [], None
    if label_type == "emotion":
        if emotion is None:
            raise IngestError(f"{where}: label_type emotion but no 'emotion' column in {columns}")
        onehot, text, classes = _emotion_labels(raw, emotion, config.emotions, problems)
        return onehot, label_type, classes, text
    if not va:
        raise IngestError(f"{where}: label_type valence_arousal but no 'valence'/'arousal' columns in {columns}")
    labels = {c.lower(): _range_check(raw, _numbers(raw, c, problems), c, -1.0, 1.0, problems, "-1..1") for c in va}
    return pd.DataFrame(labels, index=raw.index, dtype=float), label_type, [], None


def _file_problems(raw: pd.DataFrame, problems: _Problems) -> None:
    """Rows without a file, or repeating an earlier row's file, are problems."""
    text = raw["path"].astype(str).str.strip()
    absolute = raw[FILE]
    empty = text.isin(["", "nan"])
    problems.add(raw, empty, "path", "no image path")
    missing = ~empty & ~absolute.map(lambda p: Path(p).is_file())
    problems.add(raw, missing, "path", absolute.map(lambda p: f"file not found: {p}"))
    first = absolute.map(pd.Series(absolute.index, index=absolute).groupby(level=0).first())
    duplicate = ~empty & ~missing & absolute.duplicated()
    problems.add(raw, duplicate, "path", first.map(lambda i: f"duplicate of row {raw.at[i, ROW]}"))


def _finish(raw: pd.DataFrame, labels: pd.DataFrame, problems: _Problems,
            label_text: pd.Series | None) -> pd.DataFrame:
    """Drop reported rows; tag the rest labelled or unlabelled."""
    keep = ~raw.index.isin(list(problems.bad_index))
    frame = pd.DataFrame({"path": raw[FILE], "subject": raw["subject"].astype(object)}, index=raw.index)
    frame["subject"] = frame["subject"].where(frame["subject"].notna(), None)
    frame["origin"] = np.where(labels.notna().any(axis=1), "labelled", "unlabelled")
    frame["source"] = raw[SOURCE]
    if label_text is not None:
        frame["emotion"] = label_text
    frame = pd.concat([frame, labels], axis=1)
    return frame[keep].reset_index(drop=True)


def _close(where: str, frame: pd.DataFrame, problems: _Problems, total: int, limit: float) -> pd.DataFrame:
    """Log the summary; fail when too many rows were left out; return the report."""
    report = problems.frame()
    bad = len(problems.bad_index)
    counts = frame["origin"].value_counts().to_dict()
    by_column = report.groupby("column", dropna=False).size().to_dict()
    log.info("ingested %s: %d rows, %d labelled, %d unlabelled, %d left out %s", where, total,
             counts.get("labelled", 0), counts.get("unlabelled", 0), bad, by_column or "")
    share = bad / max(total, 1)
    if share > limit:
        first = "; ".join(f"{r.source} row {r.row} ({r.path}): {r.column}: {r.reason}"
                          for r in report.head(5).itertuples())
        raise IngestError(
            f"{where}: {bad} of {total} rows ({share:.1%}) are unusable, more than max_bad_fraction "
            f"{limit:.1%}. First problems: {first}"
        )
    return report


def _read_source(source: SourceConfig) -> tuple[pd.DataFrame, str]:
    if source.manifest is not None:
        return read_manifest(Path(source.manifest), source.image_root, source.subject_regex), str(source.manifest)
    if source.folder is not None:
        return read_folder(Path(source.folder), source.subject_regex), str(source.folder)
    return read_openface(Path(source.openface), Path(source.image_root), source.subject_regex), str(source.openface)


def _openface_success(raw: pd.DataFrame, problems: _Problems) -> None:
    """OpenFace writes a row even where it lost the face; its AU values there mean nothing."""
    if "success" in raw.columns:
        failed = pd.to_numeric(raw["success"], errors="coerce").fillna(0) < 1
        problems.add(raw, failed, "success", "OpenFace did not track a face (success 0)")


def ingest_labelled(config: FaceDatasetConfig) -> Ingested:
    """The configured labelled source: labelled rows, plus its unlabelled rows."""
    raw, where = _read_source(config.source)
    if config.limit is not None:
        raw = raw.head(config.limit)
    problems = _Problems()
    _file_problems(raw, problems)
    _openface_success(raw, problems)
    labels, label_type, classes, text = _labels(raw, config, problems, where)
    frame = _finish(raw, labels, problems, text)
    report = _close(where, frame, problems, len(raw), config.max_bad_fraction)
    return Ingested(frame, list(labels.columns), label_type, report, classes)


def ingest_unlabelled(config: UnlabelledConfig, max_bad_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A separate unlabelled pool: ``path``, ``subject``, ``origin`` and ``source`` per row, and the report."""
    if config.manifest is not None:
        raw, where = read_manifest(Path(config.manifest), config.image_root, config.subject_regex), str(config.manifest)
    else:
        raw, where = read_folder(Path(config.folder), config.subject_regex), str(config.folder)
    if config.limit is not None:
        raw = raw.head(config.limit)
    problems = _Problems()
    _file_problems(raw, problems)
    frame = _finish(raw, pd.DataFrame(index=raw.index), problems, None)
    return frame, _close(where, frame, problems, len(raw), max_bad_fraction)


def ingest(config: FaceDatasetConfig) -> Ingested:
    """Labelled source and unlabelled pool in one manifest; the unlabelled rows have NaN labels."""
    result = ingest_labelled(config)
    if config.unlabelled is None:
        return result
    pool, report = ingest_unlabelled(config.unlabelled, config.max_bad_fraction)
    known = set(result.frame["path"])
    pool = pool[~pool["path"].isin(known)]
    frame = pd.concat([result.frame, pool], ignore_index=True)
    frame[result.label_columns] = frame[result.label_columns].astype(float)
    return Ingested(frame, result.label_columns, result.label_type,
                    pd.concat([result.report, report], ignore_index=True), result.classes)
