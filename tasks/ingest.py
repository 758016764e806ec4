"""Stage 1 on real faces: read a user's labels into one manifest, whatever form they came in.

Three sources (a CSV manifest, a folder with a sub-folder per emotion, OpenFace 2 output) are
first read into the same raw table (``path``, ``subject``, raw label columns, and where each row
came from), then normalised by one routine, so every source gets the same checks:

- AU columns named ``AU01``, ``AU1``, ``au_12``, ``AU01_r`` or ``AU01_c`` become ``AU1``,
  ``AU12``, ...; ``_c`` columns are presence (0/1), ``_r`` columns intensities on FACS' 0-5
  scale. A bare column (no suffix) is read from its values (those within 0..5; the others are
  row problems):

  - only 0 and 1: presence;
  - values above 1, where exact 1s are less than ``AMBIGUOUS_ONES`` (80%) of the non-zero
    values: a 0-5 intensity; values within 0..1 only, not all 0/1: an intensity already on
    0..1 (but on 0..5 when another bare column goes above 1);
  - 0/1 with a few values above 1 (exact 1s are at least 80% of the non-zero values): ambiguous,
    an error naming the column and the rows holding values above 1. Read as an intensity, every 1
    would silently become 0.2; read as presence, the other values would be thrown away. Such a
    column must be named ``AUxx_c`` (presence) or ``AUxx_r`` (intensity 0-5). Real intensity
    codings have far fewer exact 1s (the A level), so this does not catch them.
  - Bare 0/1 columns beside intensity columns are an error too under ``label_type: auto`` (an
    intensity column of a rare AU can hold only 0 and 1); with ``label_type: au_intensity`` they
    are read as intensities, with ``au_presence`` as presence.

  AU numbers outside FACS (``FACS_AUS``, e.g. ``AU99``) are ignored with a warning.
  Intensities are stored scaled to 0..1.
- Emotions are one-hot float columns ``emotion_<class>`` (names normalised: angry -> anger,
  happy -> happiness, ...), with the text kept in an ``emotion`` column.
- Valence and arousal stay on [-1, 1].
- Columns that are neither path, subject nor a label of the type used (``smile``, an emotion
  column beside AU columns) are logged as ignored and listed in ``Ingested.ignored``.

A manifest is read as UTF-8 (with or without a byte-order mark), else as Windows-1252, else
Latin-1, with a warning naming the encoding used; UTF-16 with a byte-order mark is read too.
Missing, empty, binary (e.g. an Excel workbook) or malformed files are errors naming the file.

A row whose label columns are all empty goes to the unlabelled pool. A row that cannot be used
(no file, a value that is not a number, a label out of range, a duplicate) is left out and
reported with its row number and the reason; the run goes on and fails only when the share of
such rows passes ``max_bad_fraction`` (images that later yield no face crop count against the
same limit, see ``face_dataset``). A labelled source with no labelled row at all is an error.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ausynth.configs.faces import FaceDatasetConfig, NeutralSetConfig, SourceConfig, UnlabelledConfig
from ausynth.tasks.errors import DataError

log = logging.getLogger("ausynth")

# The image files a folder source (or an OpenFace image_root) is searched for: what Pillow reads
# (GIFs by their first frame; JPEG 2000 where Pillow was built with OpenJPEG), with OpenCV as a
# fallback decoder (``detect.read_rgb``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".pgm", ".ppm", ".pbm", ".pnm", ".jp2")
# FACS action units (Ekman, Friesen & Hager 2002): face AUs, then head (51-58) and eye (61-64)
# positions and the visibility codes 69-72. Other numbers (AU3, AU40, AU99) are no AU.
FACS_AUS = frozenset([1, 2, 4, 5, 6, 7, 8, *range(9, 40), *range(41, 47), *range(51, 59), *range(61, 65),
                      *range(69, 73)])
# A bare AU column of 0/1 with values above 1 is ambiguous when exact 1s are at least this share
# of its non-zero values (see the module docstring).
AMBIGUOUS_ONES = 0.8
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
# The manifest's 'section' column: which config section a row came from, so each gets its own
# detection settings and its own max_bad_fraction budget.
SECTIONS = ("source", "unlabelled")
# What a manifest that is no text starts with (the usual mistake: an Excel workbook).
BINARY_STARTS = {b"PK\x03\x04": "a zip archive or an Excel .xlsx workbook",
                 b"\xd0\xcf\x11\xe0": "an Excel .xls workbook",
                 b"%PDF": "a PDF document", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image"}
ENCODINGS = {"utf-8-sig": "UTF-8", "cp1252": "Windows-1252 (cp1252)", "latin-1": "Latin-1 (ISO-8859-1)"}


class IngestError(DataError):
    """Too many unusable rows, or labels or files the pipeline cannot interpret."""


@dataclass
class Read:
    """What one config section gave: where it was read from, its rows, and how many were left out."""

    where: str
    rows: int
    left_out: int


@dataclass
class Ingested:
    """The manifest (absolute ``path``, ``subject``, ``origin``, labels) and what went wrong."""

    frame: pd.DataFrame
    label_columns: list[str]
    label_type: str | None  # None for an unlabelled pool alone
    report: pd.DataFrame
    classes: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)  # column -> why it was not used
    read: dict[str, Read] = field(default_factory=dict)  # per section ('source', 'unlabelled')


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


def _decode(path: Path, data: bytes, what: str) -> str:
    """The text of a CSV file: UTF-8, else Windows-1252, else Latin-1 (with a warning), or UTF-16
    with a byte-order mark; a file that is no text at all is an error saying what it looks like."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        log.warning("%s %s is UTF-16 text; read it as such (UTF-8 is the usual encoding for CSV)", what, path)
        return data.decode("utf-16")
    kind = next((kind for start, kind in BINARY_STARTS.items() if data.startswith(start)), None)
    if kind is None and b"\x00" in data[:4096]:
        odd = data[1:4096:2].count(0) > 0.4 * len(data[1:4096:2])
        kind = "UTF-16 text without a byte-order mark" if odd else "a binary file"
    if kind is not None:
        raise IngestError(f"{what} {path} is not CSV text: it seems to be {kind}. Save it as 'CSV UTF-8' "
                          "(comma-separated values) and point the config at that file.")
    for encoding, name in ENCODINGS.items():
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding != "utf-8-sig":
            log.warning("%s %s is not UTF-8; read it as %s. If names or labels look wrong, save it as UTF-8.",
                        what, path, name)
        return text
    raise AssertionError("Latin-1 decodes any bytes")


def read_csv_table(path: Path, what: str = "manifest") -> pd.DataFrame:
    """A CSV file as a table of text values; a missing, empty, binary or malformed file is an error
    naming it."""
    path = Path(path)
    if not path.is_file():
        place = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        state = "is a folder, not a CSV file" if path.is_dir() else "does not exist"
        raise IngestError(f"{what} {path}{place} {state}: check the path in the config")
    data = path.read_bytes()
    if not data.strip():
        raise IngestError(f"{what} {path} is empty ({len(data)} bytes): it needs a header line "
                          "(e.g. path,subject,AU01,AU02) and one row per image")
    try:
        table = pd.read_csv(io.StringIO(_decode(path, data, what)), dtype=str, keep_default_na=False,
                            skipinitialspace=True, index_col=False)
    except pd.errors.EmptyDataError as err:
        raise IngestError(f"{what} {path} holds no CSV header: it needs a header line (e.g. path,subject,AU01) "
                          "and one row per image") from err
    except pd.errors.ParserError as err:
        raise IngestError(f"{what} {path} is not a well-formed CSV: {str(err).strip()}. Every row needs as many "
                          "comma-separated fields as the header.") from err
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise IngestError(f"{what} {path} has a header ({', '.join(table.columns)}) but no rows: "
                          "add one row per image")
    return table


def read_manifest(path: Path, image_root: Path | None, subject_regex: str | None) -> pd.DataFrame:
    """A CSV manifest as a raw table; every value is kept as text until it is checked."""
    table = read_csv_table(path)
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


def _no_images(folder: Path) -> IngestError:
    """'No images in <folder>', with the kinds of file that are there instead."""
    others = pd.Series([p.suffix.lower() or "(no extension)" for p in folder.rglob("*") if p.is_file()])
    kinds = ", ".join(f"{kind} ({n})" for kind, n in others.value_counts().head(5).items())
    plural = "s" if len(others) > 1 else ""
    found = f"; it holds {len(others)} other file{plural}: {kinds}" if len(others) else "; it is empty"
    return IngestError(f"no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}, in it and its "
                       f"sub-folders){found}")


def read_folder(folder: Path, subject_regex: str | None) -> pd.DataFrame:
    """Images under ``folder``; the first sub-folder of each is its emotion, files at the top are unlabelled."""
    if not folder.is_dir():
        raise IngestError(f"image folder {folder} does not exist")
    files = _images_under(folder)
    if not files:
        raise _no_images(folder)
    relative = [f.relative_to(folder) for f in files]
    raw = pd.DataFrame({"path": [str(r) for r in relative]})
    raw.insert(1, "subject", subject_from_name(raw["path"], subject_regex))
    raw["emotion"] = [r.parts[0] if len(r.parts) > 1 else "" for r in relative]
    raw[SOURCE] = folder.name
    raw[ROW] = np.nan
    raw[FILE] = [str(f.absolute()) for f in files]
    return raw


def _read_openface_csv(path: Path) -> pd.DataFrame:
    table = read_csv_table(path, "OpenFace CSV")
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


def _au_number(column: str) -> tuple[int, str]:
    """The AU number and suffix ('c', 'r' or '') of an AU column's name."""
    match = AU_HEADER.match(column.strip())
    return int(match.group(1)), (match.group(2) or "").lower()


def _rows(raw: pd.DataFrame, mask: pd.Series, most: int = 5) -> str:
    """'rows 14, 57, 203 and 4 more': the file lines where ``mask`` holds (with the file, if several)."""
    picked = raw.loc[mask[mask].index]
    several = raw[SOURCE].nunique() > 1
    names = [f"{source} row {row:g}" if several else f"{row:g}" for source, row in zip(picked[SOURCE], picked[ROW])]
    text = ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
    return text if several else f"row{'s' if len(names) > 1 else ''} {text}"


def _bare_kind(values: pd.Series) -> str:
    """How an AU column without _c/_r reads: 'empty', 'presence' (only 0 and 1), 'intensity'
    (0..1 or 0..5), or 'ambiguous' (0/1 with a few values above 1: see the module docstring)."""
    usable = values[values.between(0, INTENSITY_MAX)]
    if usable.empty:
        return "empty"
    if usable.isin([0.0, 1.0]).all():
        return "presence"
    positive = usable[usable > 0]
    if (usable > 1).any() and (positive == 1).mean() >= AMBIGUOUS_ONES:
        return "ambiguous"
    return "intensity"


def _ambiguous_error(raw: pd.DataFrame, values: dict[str, pd.Series], columns: list[str], where: str) -> IngestError:
    parts = []
    for column in columns:
        above = values[column].between(1, INTENSITY_MAX, inclusive="right")
        odd = ", ".join(f"{v:g}" for v in sorted(values[column][above].unique()))
        parts.append(f"column {column!r} holds 0 and 1, but {_rows(raw, above)} hold {odd}")
    number = _au_number(columns[0])[0]
    return IngestError(
        f"{where}: mixed scales: {'; '.join(parts)}. Presence (0/1) with stray values, or an intensity on "
        f"0-5 where 1 means 0.2? Rename {'the column' if len(columns) == 1 else 'each column'}: "
        f"'AU{number:02d}_c' if it holds presence (values other than 0/1 are then reported as bad rows) or "
        f"'AU{number:02d}_r' if it holds intensities on FACS' 0-5 scale."
    )


def _au_columns(raw: pd.DataFrame, values: dict[str, pd.Series], label_type: str, where: str) -> list[_AU]:
    """Which columns are AUs, of which kind and scale (from the values that parse as numbers)."""
    kinds = {}
    for column, column_values in values.items():
        suffix = _au_number(column)[1]
        kinds[column] = {"c": "presence", "r": "intensity"}.get(suffix) or _bare_kind(column_values)
    ambiguous = [column for column, kind in kinds.items() if kind == "ambiguous"]
    if ambiguous:
        raise _ambiguous_error(raw, values, ambiguous, where)
    bare = [column for column in kinds if not _au_number(column)[1]]
    binary = [column for column in bare if kinds[column] == "presence"]
    intensity = [column for column, kind in kinds.items() if kind == "intensity"]
    if binary and intensity and label_type == "auto":
        number = _au_number(binary[0])[0]
        raise IngestError(
            f"{where}: AU column{'s' if len(binary) > 1 else ''} {', '.join(binary)} "
            f"hold{'' if len(binary) > 1 else 's'} only 0 and 1 while {', '.join(intensity)} "
            f"hold{'' if len(intensity) > 1 else 's'} intensities: presence labels beside intensities, or "
            "intensity columns where no value passes 1? "
            f"Name presence columns AUxx_c and intensity columns AUxx_r (e.g. {binary[0]!r} -> 'AU{number:02d}_c' "
            f"or 'AU{number:02d}_r'), or set label_type: au_presence (intensities then count as present from "
            "presence_threshold) or au_intensity (every AU column is read as an intensity)."
        )
    for column in bare:
        if label_type == "au_intensity" or (kinds[column] == "empty" and intensity):
            kinds[column] = "intensity"
        elif kinds[column] == "empty":
            kinds[column] = "presence"
    # bare intensities share one scale: 0..5 as soon as one of them passes 1
    bare_max = max((values[c].where(values[c] <= INTENSITY_MAX).max() for c in bare if kinds[c] == "intensity"),
                   default=0.0)
    found: list[_AU] = []
    for column, kind in kinds.items():
        number, suffix = _au_number(column)
        scale = 1.0 if kind == "presence" else INTENSITY_MAX if suffix == "r" or bare_max > 1 else 1.0
        au = _AU(number, column, kind, scale)
        twin = next((other for other in found if (other.number, other.kind) == (au.number, au.kind)), None)
        if twin is not None:
            raise IngestError(f"{where}: columns {twin.column!r} and {column!r} both give AU{number} {au.kind}: "
                              "keep one")
        found.append(au)
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
    not_facs = [c for c in columns if AU_HEADER.match(c.strip()) and _au_number(c)[0] not in FACS_AUS]
    raise IngestError(
        f"{where}: no label columns; expected AU columns (AU1, AU01, AU01_r, AU01_c), 'emotion' or "
        f"'valence'/'arousal', found {columns}"
        + (f" ({', '.join(not_facs)}: no FACS action unit numbers)" if not_facs else "")
        + ". A source with no labels at all belongs under 'unlabelled:'"
    )


def _labels(raw: pd.DataFrame, config: FaceDatasetConfig, problems: _Problems,
            where: str) -> tuple[pd.DataFrame, str, list[str], pd.Series | None]:
    """The label columns of the configured (or detected) type, checked row by row."""
    columns = [c for c in raw.columns if c not in ("path", "subject", SOURCE, ROW, FILE)]
    emotion = _pick(columns, EMOTION_COLUMNS)
    va = [c for c in columns if c.lower() in VA_COLUMNS]
    facs = [c for c in columns if AU_HEADER.match(c.strip()) and _au_number(c)[0] in FACS_AUS]
    aus = [] if config.label_type in ("emotion", "valence_arousal") else _au_columns(
        raw, {c: pd.to_numeric(raw[c], errors="coerce") for c in facs}, config.label_type, where)
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


def _ignored(raw: pd.DataFrame, label_columns: list[str], label_type: str, other_columns: bool) -> dict[str, str]:
    """The columns that gave no label, and why; columns that are not label-like only when
    ``other_columns`` (OpenFace CSVs hold hundreds of landmark and pose columns by design)."""
    ignored = {}
    emotion = _pick(list(raw.columns), EMOTION_COLUMNS)
    for column in raw.columns:
        if column in ("path", "subject", SOURCE, ROW, FILE):
            continue
        if AU_HEADER.match(column.strip()):
            number = _au_number(column)[0]
            if number not in FACS_AUS:
                ignored[column] = f"AU{number} is not a FACS action unit"
            elif f"AU{number}" not in label_columns:
                ignored[column] = f"not used for label_type {label_type}"
        elif column == emotion or column.lower() in VA_COLUMNS:
            if label_type != ("emotion" if column == emotion else "valence_arousal"):
                ignored[column] = f"a label of another type; label_type is {label_type}"
        elif other_columns:
            ignored[column] = "not a path, subject or label column"
    return ignored


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
            label_text: pd.Series | None, section: str) -> pd.DataFrame:
    """Drop reported rows; tag the rest labelled or unlabelled, and with the config section they came from."""
    keep = ~raw.index.isin(list(problems.bad_index))
    frame = pd.DataFrame({"path": raw[FILE], "subject": raw["subject"].astype(object)}, index=raw.index)
    frame["subject"] = frame["subject"].where(frame["subject"].notna(), None)
    frame["origin"] = np.where(labels.notna().any(axis=1), "labelled", "unlabelled")
    frame["source"] = raw[SOURCE]
    frame["section"] = section
    if label_text is not None:
        frame["emotion"] = label_text
    frame = pd.concat([frame, labels], axis=1)
    return frame[keep].reset_index(drop=True)


def _first_problems(report: pd.DataFrame, most: int = 5) -> str:
    return "; ".join(f"{r.source} row {r.row} ({r.path}): {r.column}: {r.reason}" if pd.notna(r.row)
                     else f"{r.path}: {r.column}: {r.reason}" for r in report.head(most).itertuples())


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
        raise IngestError(
            f"{where}: {bad} of {total} rows ({share:.1%}) are unusable, more than max_bad_fraction "
            f"{limit:.1%}. First problems: {_first_problems(report)}"
        )
    return report


def _no_labelled_rows(where: str, config: FaceDatasetConfig, total: int, frame: pd.DataFrame, report: pd.DataFrame,
                      label_sources: list[str]) -> IngestError:
    """Why a labelled source gave no labelled row: its label columns are empty, or its labelled rows were bad."""
    left_out = total - len(frame)
    if config.source.folder is not None:
        empty = (f"all {len(frame)} usable images sit directly in {where}; put them in sub-folders named for "
                 "their emotion (e.g. happy/, neutral/)")
    else:
        empty = f"{len(frame)} have every label column ({', '.join(label_sources)}) empty"
    bad = f", {left_out} were left out ({_first_problems(report, 3)})" if left_out else ""
    return IngestError(
        f"{where}: none of its {total} rows has a usable label: {empty}{bad}. A labelled source needs labelled "
        "rows; a set of images without labels belongs under 'unlabelled:'."
    )


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
    ignored = _ignored(raw, list(labels.columns), label_type, other_columns=config.source.openface is None)
    if ignored:
        log.warning("%s: ignored column(s) %s", where, "; ".join(f"{c!r} ({why})" for c, why in ignored.items()))
    frame = _finish(raw, labels, problems, text, "source")
    report = _close(where, frame, problems, len(raw), config.max_bad_fraction)
    if not (frame["origin"] == "labelled").any():
        label_sources = [c for c in raw.columns if c not in ("path", "subject", SOURCE, ROW, FILE, *ignored)]
        raise _no_labelled_rows(where, config, len(raw), frame, report, label_sources)
    read = {"source": Read(where, len(raw), len(raw) - len(frame))}
    return Ingested(frame, list(labels.columns), label_type, report, classes, ignored, read)


def _read_images(config: UnlabelledConfig) -> tuple[pd.DataFrame, str]:
    """The raw table of a manifest or folder of images, and where it was read from."""
    if config.manifest is not None:
        return read_manifest(Path(config.manifest), config.image_root, config.subject_regex), str(config.manifest)
    return read_folder(Path(config.folder), config.subject_regex), str(config.folder)


def _image_rows(raw: pd.DataFrame, where: str, section: str,
                max_bad_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, Read]:
    """Rows without labels: the file checks, the report and the counts, as for every source."""
    problems = _Problems()
    _file_problems(raw, problems)
    frame = _finish(raw, pd.DataFrame(index=raw.index), problems, None, section)
    report = _close(where, frame, problems, len(raw), max_bad_fraction)
    return frame, report, Read(where, len(raw), len(raw) - len(frame))


def ingest_unlabelled(config: UnlabelledConfig, max_bad_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, Read]:
    """A separate unlabelled pool: ``path``, ``subject``, ``origin``, ``source`` and ``section`` per row,
    the report, and the counts."""
    raw, where = _read_images(config)
    if config.limit is not None:
        raw = raw.head(config.limit)
    return _image_rows(raw, where, "unlabelled", max_bad_fraction)


def _neutral_rows(raw: pd.DataFrame, config: NeutralSetConfig, where: str) -> pd.DataFrame:
    """The rows whose ``config.column`` holds ``config.value`` (case and spaces aside); a column that is
    missing or never holds the value is an error here, before any image is read."""
    if config.column is None:
        return raw
    if config.column not in raw.columns:
        columns = [c for c in raw.columns if c not in (SOURCE, ROW, FILE)]
        raise IngestError(f"dataset.neutral: {where} has no column {config.column!r} (its columns: "
                          f"{', '.join(columns)}); set dataset.neutral.column to the one that marks neutral faces")
    values = raw[config.column].astype(str).str.strip().str.lower()
    keep = values == config.value.strip().lower()
    if not keep.any():
        found = ", ".join(f"{v!r} ({n})" for v, n in values.value_counts().head(10).items())
        raise IngestError(f"dataset.neutral: no row of {where} has {config.column} = {config.value!r} (values "
                          f"found: {found}); set dataset.neutral.value to the one that marks neutral faces")
    others = values[~keep].value_counts().to_dict()
    log.info("neutral set %s: %d of %d rows have %s = %r; %d other rows left out %s", where, int(keep.sum()),
             len(raw), config.column, config.value, len(raw) - int(keep.sum()), others or "")
    return raw[keep]


def ingest_neutral(config: NeutralSetConfig, max_bad_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, Read]:
    """A labelled neutral set: its neutral rows (``limit`` of them at most), like an unlabelled pool's."""
    raw, where = _read_images(config)
    raw = _neutral_rows(raw, config, where)
    if config.limit is not None:
        raw = raw.head(config.limit)
    return _image_rows(raw, where, "neutral", max_bad_fraction)


def ingest(config: FaceDatasetConfig) -> Ingested:
    """Labelled source and unlabelled pool in one manifest; the unlabelled rows have NaN labels. A pool
    alone has no label column."""
    if config.source is None:
        pool, report, read = ingest_unlabelled(config.unlabelled, config.max_bad_fraction)
        return Ingested(pool, [], None, report, read={"unlabelled": read})
    result = ingest_labelled(config)
    if config.unlabelled is None:
        return result
    pool, report, read = ingest_unlabelled(config.unlabelled, config.max_bad_fraction)
    known = set(result.frame["path"])
    pool = pool[~pool["path"].isin(known)]
    frame = pd.concat([result.frame, pool], ignore_index=True)
    frame[result.label_columns] = frame[result.label_columns].astype(float)
    report = pd.concat([result.report, report], ignore_index=True)
    return Ingested(frame, result.label_columns, result.label_type, report, result.classes, result.ignored,
                    {**result.read, "unlabelled": read})
