"""The dataset report: its files for each label type, and logging them to MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ausynth.configs.schema import ToyDatasetConfig
from ausynth.tasks.dataset_report import write_dataset_report
from ausynth.tasks.face_dataset import write_reports
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.toy_data import build_toy

DETECTION = pd.DataFrame({"path": [f"/x/{i}.jpg" for i in range(6)],
                          "status": ["ok", "ok", "ok", "no_face", "multiple_faces", "unreadable"],
                          "faces": [1, 1, 1, 0, 2, 0], "alignment": ["eyes", "box", "eyes", "", "eyes", ""],
                          "cropped": [True, True, True, False, True, False],
                          "reason": ["", "", "", "no face found", "2 faces found; kept the largest one", "bad"],
                          "content_hash": list("abcdef")})
INGEST = pd.DataFrame({"source": ["m.csv", "m.csv", "m.csv"], "row": [3, 3, 7], "path": ["a", "a", "b"],
                       "column": ["AU1", "AU2", "path"], "reason": ["7 is outside 0..5", "x", "file not found"]})


@pytest.fixture(scope="module")
def toy():
    return build_toy(ToyDatasetConfig(labelled=60, unlabelled=10, test_per_au=2, difficulty="clean"))


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_au_report_files_and_numbers(toy, tmp_path):
    folder = tmp_path / "report"
    summary = write_dataset_report(toy, folder, {"detection": DETECTION, "ingest": INGEST}, examples_per_label=4)
    for name in ("counts_per_subject.csv", "counts_per_split.csv", "label_prevalence.csv", "label_counts.csv",
                 "au_cooccurrence.csv", "au_cooccurrence.png", "examples.jpg", "detection_summary.csv",
                 "detection.csv", "ingest_problems.csv", "summary.json"):
        assert (folder / name).is_file(), name
    assert min(_size(folder / "au_cooccurrence.png")) > 100 and min(_size(folder / "examples.jpg")) > 100

    per_split = pd.read_csv(folder / "counts_per_split.csv", index_col=0)
    n_val = int((toy["labelled"].frame["split"] == "val").sum())
    assert per_split.loc["val", "images"] == n_val and per_split.loc["train", "images"] == 60 - n_val
    assert per_split.loc["unlabelled", "labelled"] == 0 and per_split.loc["test", "images"] == 18
    subjects = pd.read_csv(folder / "counts_per_subject.csv", index_col=0)
    assert subjects.loc["toy-test-digits", "test"] == 18 and subjects["total"].sum() == 88

    prevalence = pd.read_csv(folder / "label_prevalence.csv", index_col=0)
    labels = toy["labelled"].frame
    expected = labels[labels["split"] == "train"]["AU3"].mean()
    assert prevalence.loc["train", "AU3"] == pytest.approx(expected)
    assert "unlabelled" not in prevalence.index
    np.testing.assert_allclose(prevalence.loc["test"], 1 / 9)
    counts = pd.read_csv(folder / "label_counts.csv", index_col=0)
    assert counts.loc["test"].tolist() == [2] * 9

    matrix = pd.read_csv(folder / "au_cooccurrence.csv", index_col=0).to_numpy()
    np.testing.assert_allclose(np.diag(matrix), 1.0)  # every toy AU occurs in 60 images

    detection = pd.read_csv(folder / "detection_summary.csv", index_col=0)
    assert detection.loc["ok", "images"] == 3 and detection.loc["multiple_faces", "cropped"] == 1
    assert detection["share"].sum() == pytest.approx(1.0)
    assert summary["detection_crop_rate"] == pytest.approx(4 / 6) and summary["detection_no_face"] == 1
    assert summary["ingest_rows_left_out"] == 2 and summary["ingest_problems"] == 3
    assert summary["images_test"] == 18 and summary["labelled_unlabelled"] == 0
    assert json.loads((folder / "summary.json").read_text())["metrics"] == summary


def _emotion_sets(rng: np.random.Generator) -> dict[str, ImageSet]:
    columns = ["emotion_anger", "emotion_happiness", "emotion_neutral"]
    sets = {}
    for name, n, subjects in (("labelled", 30, ["KA", "KL", "KM"]), ("unlabelled", 6, ["LFW1", "LFW2"]),
                              ("test", 9, ["YM"])):
        labels = np.eye(3)[rng.integers(0, 3, n)] if name != "unlabelled" else np.full((n, 3), np.nan)
        frame = pd.DataFrame(labels, columns=columns)
        frame.insert(0, "subject", [subjects[i % len(subjects)] for i in range(n)])
        if name == "labelled":
            frame["split"] = np.where(np.arange(n) < 24, "train", "val")
        images = rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8)
        sets[name] = ImageSet(images, frame, columns, {"label_type": "emotion", "classes": ["anger", "happiness",
                                                                                            "neutral"]})
    return sets


def test_emotion_report_has_class_counts_and_reads_reports_from_meta(tmp_path):
    sets = _emotion_sets(np.random.default_rng(0))
    paths = write_reports({"ingest": INGEST.head(0), "detection": DETECTION,
                           "split": pd.DataFrame({"images": [24, 6, 9]}, index=pd.Index(["train", "val", "test"],
                                                                                          name="split"))},
                          tmp_path / "reports")
    for imageset in sets.values():
        imageset.meta["reports"] = {name: str(path) for name, path in paths.items()}
    folder = tmp_path / "report"
    summary = write_dataset_report(sets, folder)
    assert (folder / "class_counts.png").is_file() and (folder / "examples.jpg").is_file()
    assert not (folder / "au_cooccurrence.png").exists()
    counts = pd.read_csv(folder / "class_counts.csv", index_col=0)
    truth = sets["test"].frame[sets["test"].label_columns].sum()
    assert counts.loc["test"].tolist() == truth.astype(int).tolist()
    assert counts.sum(axis=1).to_dict() == {"train": 24, "val": 6, "test": 9}
    assert summary["detection_crop_rate"] == pytest.approx(4 / 6)  # 'cropped' read back from the CSV
    assert summary["ingest_rows_left_out"] == 0
    assert pd.read_csv(folder / "split_statistics.csv", index_col=0).loc["val", "images"] == 6
    assert 0 < summary["smallest_class_share"] <= 1 / 3


def test_example_crops_stay_small_on_noisy_images(tmp_path):
    """Noise does not compress: as a PNG the toy set's medium examples took 4 MB."""
    noisy = build_toy(ToyDatasetConfig(labelled=300, unlabelled=0, test_per_au=2, difficulty="medium"))
    write_dataset_report(noisy, tmp_path)
    with Image.open(tmp_path / "examples.jpg") as image:
        assert image.format == "JPEG" and min(image.size) > 400
    assert (tmp_path / "examples.jpg").stat().st_size < 400_000


def test_valence_arousal_report(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"subject": ["a", "b"] * 10, "valence": rng.uniform(-1, 1, 20),
                          "arousal": rng.uniform(-1, 1, 20), "split": ["train"] * 16 + ["val"] * 4})
    frame.loc[3, "arousal"] = np.nan
    images = rng.integers(0, 255, (20, 16, 16, 1), dtype=np.uint8)
    sets = {"labelled": ImageSet(images, frame, ["valence", "arousal"], {}),
            "test": ImageSet(images[:5], frame.head(5).drop(columns="split"), ["valence", "arousal"], {})}
    va_folder = tmp_path / "va"
    write_dataset_report(sets, va_folder, {})
    assert (va_folder / "valence_arousal.png").is_file() and (va_folder / "examples.jpg").is_file()
    assert not (va_folder / "au_cooccurrence.png").exists() and not (va_folder / "class_counts.png").exists()
    assert json.loads((va_folder / "summary.json").read_text())["label_type"] == "valence_arousal"
    counts = pd.read_csv(va_folder / "label_counts.csv", index_col=0)
    assert counts.loc["train", "valence"] == 16 and counts.loc["train", "arousal"] == 15  # labelled values


def test_the_report_task_logs_the_summary_and_files_on_the_run(tiny_config, tmp_path):
    """What the comparison's dataset-report task puts on the parent run: ``dataset.*`` params and the folder."""
    from ausynth.tasks import datasets
    from ausynth.tasks.prefect_tasks import dataset_report_task
    from ausynth.tasks.tracking import Tracker

    dataset = datasets.prepare_dataset(tiny_config)
    tracker = Tracker(tiny_config)
    run_id = tracker.start_parent(tmp_path / "out")
    dataset_report_task.fn(tiny_config, dataset, run_id, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "dataset" / "summary.json").read_text())
    assert summary["label_type"] == "au_presence" and summary["metrics"]["images_test"] == 90  # 10 per AU
    run = tracker.client.get_run(run_id)
    assert {k: v for k, v in run.data.params.items() if k.startswith("dataset.images")} == {
        f"dataset.{k}": str(v) for k, v in summary["metrics"].items() if k.startswith("images")}
    assert run.data.params["dataset.images_test"] == "90.0"
    artifacts = {Path(a.path).name for a in tracker.client.list_artifacts(run_id, "dataset")}
    assert {"au_cooccurrence.png", "examples.jpg", "counts_per_subject.csv", "label_prevalence.csv",
            "summary.json"} <= artifacts
