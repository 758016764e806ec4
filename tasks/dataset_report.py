"""The dataset report: what the data going into a comparison looks like, as files and in MLflow.

``write_dataset_report`` takes the three sets every dataset builder returns ('labelled' with a
train/val ``split`` column, 'unlabelled', 'test') and, where there are any, the reports of the
face stages (ingestion problems, per-image detection results, per-split label statistics), and
writes into a folder:

- ``counts_per_subject.csv``: images per subject (rows) and split (columns), with a total;
- ``counts_per_split.csv``: images, subjects, labelled and unlabelled images per split;
- ``label_prevalence.csv``: per split, each label column's mean over its labelled rows (AU and
  emotion prevalence, mean intensity, mean valence/arousal), and ``label_counts.csv``: per split,
  positives per column (AU presence, emotion) or labelled values (intensity, valence/arousal);
- ``au_cooccurrence.png`` / ``.csv`` (AU labels): P(column AU | row AU) over the labelled
  train/val rows, intensities counting as present from ``INTENSITY_PRESENT`` (2 on FACS' 0-5);
  ``class_counts.png`` / ``.csv`` (emotions): images per class and split;
  ``valence_arousal.png`` (valence/arousal): the labelled rows in the valence-arousal plane;
- ``examples.jpg``: a row of example crops per label (for AUs also a row of faces with no AU), drawn
  one image pixel to one file pixel and saved as JPEG: a PNG of noisy grids or photos took megabytes;
- ``detection_summary.csv``: images per detection status, with the share; and the given reports
  themselves (``ingest_problems.csv``, ``detection.csv``, ``split_statistics.csv``);
- ``summary.json``: the numbers the tracker logs as the run's ``dataset.*`` params.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
pyplot's global state, so the report can be written from any thread (Prefect runs tasks on
worker threads). The tracker (``tracking.Tracker``) logs the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.metrics import cooccurrence
from ausynth.tasks.label_types import AUIntensity, of

SPLIT_ORDER = ("train", "val", "labelled", "unlabelled", "test")
INTENSITY_PRESENT = AUIntensity.present_from
SUMMARY = "summary.json"
DPI = 100  # of every figure file
EXAMPLES_QUALITY = 80  # JPEG quality of examples.jpg
ARTIFACT_PATH = "dataset"
# face_dataset's report names -> the file names in the report folder
REPORT_FILES = {"ingest": "ingest_problems.csv", "detection": "detection.csv", "split": "split_statistics.csv"}


# ----------------------------------------------------------------------------- tables

def combined_frame(sets: dict[str, ImageSet]) -> tuple[pd.DataFrame, list[str]]:
    """All rows of all sets: ``set``, ``row`` (index in its set), ``split``, ``subject``, ``labelled``
    and the label columns; and the label columns."""
    label_columns = next(iter(sets.values())).label_columns
    parts = []
    for name, imageset in sets.items():
        if imageset.label_columns != label_columns:
            raise ValueError(f"set {name!r} has labels {imageset.label_columns}, not {label_columns}")
        frame = imageset.frame
        split = frame["split"].astype(str) if "split" in frame.columns else pd.Series(name, index=frame.index)
        subject = frame["subject"] if "subject" in frame.columns else pd.Series(np.nan, index=frame.index)
        part = pd.DataFrame({"set": name, "row": np.arange(len(frame)), "split": split.to_numpy(),
                             "subject": subject.astype(object).where(subject.notna(), "(none)").astype(str)
                             .to_numpy()})
        labels = pd.DataFrame(imageset.labels, columns=label_columns)
        part["labelled"] = labels.notna().any(axis=1).to_numpy()
        parts.append(pd.concat([part, labels], axis=1))
    return pd.concat(parts, ignore_index=True), list(label_columns)


def _split_order(splits) -> list[str]:
    present = list(dict.fromkeys(splits))
    return [s for s in SPLIT_ORDER if s in present] + [s for s in present if s not in SPLIT_ORDER]


def counts_per_subject(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.crosstab(frame["subject"], frame["split"]).reindex(columns=_split_order(frame["split"]), fill_value=0)
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table.sort_values(["total"], ascending=False, kind="stable")


def counts_per_split(frame: pd.DataFrame) -> pd.DataFrame:
    grouped = frame.groupby("split", sort=False)
    table = pd.DataFrame({"images": grouped.size(), "subjects": grouped["subject"].nunique(),
                          "labelled": grouped["labelled"].sum().astype(int)})
    table["unlabelled"] = table["images"] - table["labelled"]
    return table.reindex(_split_order(frame["split"])).rename_axis("split")


def _labelled_by_split(frame: pd.DataFrame, label_columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The labelled rows with an extra 'all labelled' group (train, val and test, not the pool)."""
    labelled = frame[frame["labelled"]]
    rows = pd.concat([labelled, labelled.assign(split="all labelled")], ignore_index=True)
    return rows, _split_order(labelled["split"]) + ["all labelled"]


def label_prevalence(frame: pd.DataFrame, label_columns: list[str]) -> pd.DataFrame:
    """Per split with labels, each column's mean over its labelled (non-NaN) rows."""
    rows, order = _labelled_by_split(frame, label_columns)
    return rows.groupby("split")[label_columns].mean().reindex(order).rename_axis("split")


def label_counts(frame: pd.DataFrame, label_columns: list[str], label_type: str) -> pd.DataFrame:
    """Per split with labels: positives per column (AU presence, emotion), else labelled values."""
    rows, order = _labelled_by_split(frame, label_columns)
    values = rows[label_columns]
    counted = (values >= 0.5) if label_type in ("au_presence", "emotion") else values.notna()
    counted = counted.astype(int).assign(split=rows["split"])
    return counted.groupby("split")[label_columns].sum().reindex(order).rename_axis("split")


def _truthy(values: pd.Series) -> pd.Series:
    """Booleans as written by pandas or read back from a CSV ('True'/'False')."""
    return values.astype(str).str.strip().str.lower().isin(["true", "1"])


def detection_summary(detection: pd.DataFrame) -> pd.DataFrame:
    """Images per detection status, with the share of all images; the cropped count per status."""
    counts = detection.groupby("status").size().rename("images")
    table = counts.to_frame()
    table["share"] = table["images"] / max(len(detection), 1)
    if "cropped" in detection.columns:
        table["cropped"] = _truthy(detection["cropped"]).groupby(detection["status"]).sum().astype(int)
    return table.sort_values("images", ascending=False, kind="stable")


# ----------------------------------------------------------------------------- figures

def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI)


def plot_cooccurrence(matrix: np.ndarray, names: list[str], title: str) -> Figure:
    size = max(4.0, 0.45 * len(names) + 2.0)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize="small")
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.set_xlabel("AU j")
    ax.set_ylabel("AU i")
    if len(names) <= 16:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize="x-small",
                        color="white" if matrix[i, j] < 0.6 else "black")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, fraction=0.046, label="P(AU j | AU i)")
    fig.tight_layout()
    return fig


def plot_class_counts(counts: pd.DataFrame) -> Figure:
    """Grouped bars: classes on the x axis, one bar per split."""
    fig = Figure(figsize=(max(5.0, 0.9 * len(counts.columns) + 2.0), 4))
    ax = fig.subplots()
    splits = list(counts.index)
    width = 0.8 / max(len(splits), 1)
    x = np.arange(len(counts.columns))
    for k, split in enumerate(splits):
        ax.bar(x + (k - (len(splits) - 1) / 2) * width, counts.loc[split].to_numpy(), width, label=split)
    ax.set_xticks(x, [c.removeprefix("emotion_") for c in counts.columns], rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title("Emotion classes per split")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_valence_arousal(frame: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    labelled = frame[frame["labelled"]]
    for split in _split_order(labelled["split"]):
        part = labelled[labelled["split"] == split]
        ax.scatter(part.get("valence", pd.Series(0.0, index=part.index)),
                   part.get("arousal", pd.Series(0.0, index=part.index)), s=6, alpha=0.5, label=split)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_title("Valence / arousal labels")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def example_rows(frame: pd.DataFrame, label_columns: list[str], label_type: str, per_label: int,
                 rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(row title, positions in ``frame``) per label: images showing it, at most ``per_label``."""
    labelled = frame[frame["labelled"]]
    values = labelled[label_columns]

    def pick(candidates: pd.Index) -> np.ndarray:
        chosen = np.asarray(candidates)
        return rng.choice(chosen, size=min(per_label, len(chosen)), replace=False) if len(chosen) else chosen

    rows: list[tuple[str, np.ndarray]] = []
    if label_type in ("au_presence", "au_intensity"):
        present = values >= (0.5 if label_type == "au_presence" else INTENSITY_PRESENT)
        for column in label_columns:
            positives = values.index[present[column]]
            rows.append((f"{column} (n={len(positives)})", pick(positives)))
        none = values.index[(values.fillna(1.0) == 0.0).all(axis=1)]
        rows.append((f"no AU (n={len(none)})", pick(none)))
    elif label_type == "emotion":
        complete = values.dropna()
        complete = complete[complete.sum(axis=1) > 0]
        winner = pd.Series(np.asarray(label_columns)[np.argmax(complete.to_numpy(), axis=1)], index=complete.index) \
            if len(complete) else pd.Series(dtype=object)
        for column in label_columns:
            members = winner.index[winner == column]
            rows.append((f"{column.removeprefix('emotion_')} (n={len(members)})", pick(members)))
    else:
        for column in label_columns:
            known = values[column].dropna().sort_values()
            rows.append((f"{column} high", known.index[::-1][:per_label].to_numpy()))
            rows.append((f"{column} low", known.index[:per_label].to_numpy()))
    return rows


def mosaic(images: list[list[np.ndarray]], shape: tuple[int, int, int], per_row: int, pad: int = 2) -> np.ndarray:
    """Rows of images on a grey canvas, ``per_row`` cells per row; empty cells stay grey."""
    h, w, c = shape
    canvas = np.full((len(images) * (h + pad) + pad, per_row * (w + pad) + pad, c), 128, dtype=np.uint8)
    for r, row in enumerate(images):
        for k, image in enumerate(row[:per_row]):
            top, left = pad + r * (h + pad), pad + k * (w + pad)
            canvas[top:top + h, left:left + w] = image
    return canvas


def plot_examples(sets: dict[str, ImageSet], frame: pd.DataFrame, rows: list[tuple[str, np.ndarray]],
                  per_label: int) -> Figure:
    shape = next(iter(sets.values())).image_shape
    images = [[sets[frame.at[i, "set"]].images[frame.at[i, "row"]] for i in positions] for _, positions in rows]
    canvas = mosaic(images, shape, per_label)
    h = shape[0]
    scale = max(1.0 / DPI, 0.9 / h)  # inches per image pixel: one file pixel each, small crops drawn >= 0.9 inch
    fig = Figure(figsize=(max(4.0, canvas.shape[1] * scale + 1.8), max(2.0, canvas.shape[0] * scale + 0.6)))
    ax = fig.subplots()
    if shape[2] == 1:
        ax.imshow(canvas[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(canvas)
    ax.set_yticks([2 + r * (h + 2) + h / 2 for r in range(len(rows))], [title for title, _ in rows],
                  fontsize="small")
    ax.set_xticks([])
    ax.set_title("Example crops per label", fontsize="medium")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the report

def _reports_from_meta(sets: dict[str, ImageSet]) -> dict[str, pd.DataFrame]:
    """The face stages' report CSVs named in the sets' meta (``build_faces`` writes them)."""
    paths = next((s.meta.get("reports") for s in sets.values() if s.meta.get("reports")), None) or {}
    found = {}
    for name, path in paths.items():
        if Path(path).is_file():
            found[name] = pd.read_csv(path, index_col=0 if name == "split" else None, keep_default_na=False,
                                      na_values=[""])
    return found


def _ingest_counts(ingest: pd.DataFrame) -> dict[str, float]:
    if ingest.empty:
        return {"ingest_rows_left_out": 0.0, "ingest_problems": 0.0}
    keys = [c for c in ("source", "row", "path") if c in ingest.columns]
    rows = len(ingest.drop_duplicates(keys)) if keys else len(ingest)
    return {"ingest_rows_left_out": float(rows), "ingest_problems": float(len(ingest))}


def write_dataset_report(sets: dict[str, ImageSet], folder: Path, reports: dict[str, pd.DataFrame] | None = None,
                         examples_per_label: int = 5, seed: int = 0) -> dict[str, float]:
    """Write the report's files into ``folder`` (created if needed; other files there are left
    alone) and return its summary numbers (also in ``summary.json``).

    ``reports`` maps 'ingest', 'detection' and 'split' (as ``face_dataset.FaceData.reports``) to
    their tables; when None, the CSVs named in the sets' ``meta["reports"]`` are read, if any.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not sets:
        raise ValueError("no image sets to report on")
    frame, label_columns = combined_frame(sets)
    reference = sets["labelled"] if "labelled" in sets else next(iter(sets.values()))
    label_type = of(reference).name
    reports = _reports_from_meta(sets) if reports is None else reports

    per_split = counts_per_split(frame)
    counts_per_subject(frame).to_csv(folder / "counts_per_subject.csv")
    per_split.to_csv(folder / "counts_per_split.csv")
    summary: dict[str, float] = {"images": float(len(frame)), "subjects": float(frame["subject"].nunique()),
                                 "label_columns": float(len(label_columns))}
    for split, row in per_split.iterrows():
        summary.update({f"{key}_{split}": float(row[key]) for key in ("images", "subjects", "labelled")})

    if frame["labelled"].any():
        prevalence = label_prevalence(frame, label_columns)
        prevalence.to_csv(folder / "label_prevalence.csv")
        counts = label_counts(frame, label_columns, label_type)
        counts.to_csv(folder / "label_counts.csv")
        # the largest gap between a split's label means and all labelled rows' means
        spread = (prevalence.drop(index="all labelled") - prevalence.loc["all labelled"]).abs()
        summary["prevalence_max_gap"] = float(np.nan_to_num(spread.to_numpy(), nan=0.0).max(initial=0.0))
        training = frame[frame["labelled"] & frame["split"].isin(["train", "val", "labelled"])]
        training = training if len(training) else frame[frame["labelled"]]
        if label_type in ("au_presence", "au_intensity"):
            values = training[label_columns].to_numpy(dtype=float)
            if label_type == "au_intensity":
                values = np.where(np.isnan(values), np.nan, (values >= INTENSITY_PRESENT).astype(float))
            matrix = cooccurrence(values)
            pd.DataFrame(matrix, index=label_columns, columns=label_columns).to_csv(folder / "au_cooccurrence.csv")
            present = "present" if label_type == "au_presence" else f"intensity >= {INTENSITY_PRESENT:g}"
            _save(plot_cooccurrence(matrix, label_columns, f"AU co-occurrence, {len(training)} labelled "
                                    f"train/val images ({present})"), folder / "au_cooccurrence.png")
        elif label_type == "emotion":
            splits = counts.drop(index="all labelled")
            splits.to_csv(folder / "class_counts.csv")
            _save(plot_class_counts(splits), folder / "class_counts.png")
            summary["smallest_class_share"] = float(counts.loc["all labelled"].min()
                                                    / max(counts.loc["all labelled"].sum(), 1))
        else:
            _save(plot_valence_arousal(frame), folder / "valence_arousal.png")
        rows = example_rows(frame, label_columns, label_type, examples_per_label, np.random.default_rng(seed))
        if any(len(positions) for _, positions in rows):
            plot_examples(sets, frame, rows, examples_per_label).savefig(
                folder / "examples.jpg", dpi=DPI, pil_kwargs={"quality": EXAMPLES_QUALITY})

    if reports.get("detection") is not None and len(reports["detection"]):
        detection = reports["detection"]
        table = detection_summary(detection)
        table.to_csv(folder / "detection_summary.csv")
        summary.update({f"detection_{status}": float(n) for status, n in table["images"].items()})
        summary["detection_images"] = float(len(detection))
        if "cropped" in detection.columns:
            summary["detection_crop_rate"] = float(_truthy(detection["cropped"]).mean())
    if reports.get("ingest") is not None:
        summary.update(_ingest_counts(reports["ingest"]))
    for name, table in reports.items():
        if table is not None:
            table.to_csv(folder / REPORT_FILES.get(name, f"{name}.csv"), index=name == "split")
    split_meta = reference.meta.get("split")
    if isinstance(split_meta, dict) and "imbalance" in split_meta:
        summary["split_imbalance"] = float(split_meta["imbalance"])

    summary = {key: value for key, value in summary.items() if np.isfinite(value)}
    (folder / SUMMARY).write_text(json.dumps({"label_type": label_type, "metrics": summary}, indent=2))
    return summary
