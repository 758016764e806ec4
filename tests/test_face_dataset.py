"""Faces end to end (ingest -> crop -> identity split) on the real images in ../shared/data, in
the toy set's contract; and the config's validation messages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.configs.schema import ToyDatasetConfig
from ausynth.tasks import detect
from ausynth.tasks.errors import DataError
from ausynth.tasks.face_dataset import build_faces
from ausynth.tasks.identity_split import MissingSubjectError, TooFewSubjectsError
from ausynth.tasks.toy_data import build_toy

SHARED = Path(os.environ.get("AUSYNTH_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
needs_jaffe_lfw = pytest.mark.skipif(not ((SHARED / "jaffe").is_dir() and (SHARED / "lfw-pairs").is_dir()),
                                     reason=f"JAFFE or LFW not found under {SHARED}")
needs_fer = pytest.mark.skipif(not (SHARED / "fer2013-privatetest").is_dir(),
                               reason=f"FER2013 not found under {SHARED}")


def _subset(csv: Path, out: Path, per_group: int, by: str) -> Path:
    """A few rows per group of a shared manifest, with absolute paths (the data stays where it is)."""
    frame = pd.read_csv(csv, keep_default_na=False)  # JAFFE has a subject called 'NA'
    frame = frame.groupby(frame[by], group_keys=False).head(per_group)
    frame["path"] = [str(csv.parent / p) for p in frame["path"]]
    frame.to_csv(out, index=False)
    return out


@needs_jaffe_lfw
def test_jaffe_with_lfw_pool_in_the_toy_contract(tmp_path, monkeypatch):
    manifest = _subset(SHARED / "jaffe" / "labels.csv", tmp_path / "jaffe.csv", per_group=3, by="subject")
    config = FaceDatasetConfig(
        source={"manifest": manifest},
        unlabelled={"manifest": SHARED / "lfw-pairs" / "identities.csv", "limit": 20},
        detection={"backend": "opencv", "size": 48, "channels": 1},
        split={"val": 0.1, "test": 0.2, "draws": 5},
    )
    sets = build_faces(config, tmp_path / "ws")
    toy = build_toy(ToyDatasetConfig(labelled=20, unlabelled=5, test_per_au=1))
    assert set(sets) == set(toy)
    assert set(sets["labelled"].frame["split"]) == set(toy["labelled"].frame["split"]) == {"train", "val"}
    for imageset in sets.values():
        assert imageset.images.dtype == np.uint8 and imageset.image_shape == (48, 48, 1)
        assert imageset.label_columns == [f"emotion_{c}" for c in imageset.meta["classes"]]
        assert imageset.meta["label_type"] == "emotion"
    assert len(sets["labelled"]) + len(sets["test"]) >= 27  # of 30 JAFFE images
    assert set(sets["test"].frame["subject"]).isdisjoint(sets["labelled"].frame["subject"])
    pool = sets["unlabelled"]
    assert len(pool) >= 18 and pool.frame[pool.label_columns].isna().all().all()

    reports = {name: pd.read_csv(path) for name, path in sets["labelled"].meta["reports"].items()}
    assert len(reports["detection"]) == 50 and reports["ingest"].empty
    assert list(reports["split"]["split"]) == ["train", "val", "test", "all"]

    monkeypatch.setattr(detect, "make_backend", lambda cfg: pytest.fail("a re-run should read crops from the cache"))
    again = build_faces(config, tmp_path / "ws")
    np.testing.assert_array_equal(again["test"].images, sets["test"].images)


@needs_fer
def test_fer2013_crops_pass_through_and_need_the_subject_fallback(tmp_path):
    manifest = _subset(SHARED / "fer2013-privatetest" / "labels.csv", tmp_path / "fer.csv", per_group=8, by="emotion")
    config = {"source": {"manifest": manifest}, "detection": {"backend": "none", "size": 48, "channels": 1}}
    with pytest.raises(MissingSubjectError, match="allow_missing_subject"):
        build_faces(FaceDatasetConfig(**config), tmp_path / "ws")
    sets = build_faces(FaceDatasetConfig(**config, split={"allow_missing_subject": True}), tmp_path / "ws")
    assert len(sets["labelled"]) + len(sets["test"]) == 56
    assert sets["test"].meta["classes"] == ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert sets["labelled"].frame["subject"].str.startswith("image:").all()


@pytest.mark.parametrize(("config", "message"), [
    ({"source": {}}, "give exactly one source"),
    ({"source": {"manifest": "a.csv", "folder": "b"}}, "give exactly one source"),
    ({"source": {"folder": "b"}, "label_type": "au_presence"}, "sub-folder name"),
    ({"source": {"folder": "b", "subject_regex": "[A-Z]+"}}, "has no group"),
    ({"source": {"manifest": "a.csv"}, "split": {"val": 0.5, "test": 0.45}}, "less than 10% for training"),
    ({"source": {"manifest": "a.csv"}, "detection": {"channels": 2}}, "channels"),
    ({"source": {"manifest": "a.csv"}, "detecton": {}}, "detecton"),
    ({"source": {"manifest": "a.csv", "detection": {"backend": "none", "size": 64}}}, "size cannot differ per source"),
    ({"source": {"manifest": "a.csv"}, "unlabelled": {"folder": "p", "detection": {"channels": 1, "cache_dir": "c"}}},
     "channels, cache_dir cannot differ per source"),
])
def test_config_errors_are_clear(config, message):
    with pytest.raises(ValidationError, match=message):
        FaceDatasetConfig(**config)


# ----------------------------------------------------------------------------- synthetic sources, data problems

def _source(folder: Path, n: int, broken: int = 0, subjects: int = 10, suffix: str = ".png") -> Path:
    """A manifest of ``n`` noise images (already 'crops'), the first ``broken`` of them not images at all."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["path,subject,emotion"]
    for i in range(n):
        path = folder / f"img{i:02d}{suffix}"
        if i < broken:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        lines.append(f"{path.name},s{i % subjects},{'happy' if i % 2 else 'sad'}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def _blank_pool(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((80, 80, 3), 200, dtype=np.uint8)).save(folder / f"blank{i}.png")
    return folder


def test_unreadable_images_count_against_max_bad_fraction(tmp_path):
    manifest = _source(tmp_path / "src", 20, broken=6)
    config = {"source": {"manifest": manifest}, "detection": {"backend": "none", "size": 32}}
    with pytest.raises(DataError) as info:
        build_faces(FaceDatasetConfig(**config), tmp_path / "ws")
    report = next((tmp_path / "ws" / "reports").glob("faces-*/detection.csv"))
    message = str(info.value)
    assert message.startswith(f"labelled source {manifest}: 6 of 20 images gave no face crop (6 unreadable): "
                              "6 of 20 rows (30.0%) are unusable, more than max_bad_fraction 5.0%.")
    assert f"is in {report};" in message and str(tmp_path / "src" / "img00.png") in message
    assert (pd.read_csv(report)["status"] == "unreadable").sum() == 6
    sets = build_faces(FaceDatasetConfig(**config, max_bad_fraction=0.3), tmp_path / "ws")
    assert len(sets["labelled"]) + len(sets["test"]) == 14


def test_rows_left_out_and_images_without_crop_share_one_budget(tmp_path):
    manifest = _source(tmp_path / "src", 20, broken=2)
    manifest.write_text(manifest.read_text() + "gone.png,s1,happy\ngone2.png,s2,sad\n")  # 2 rows left out
    config = FaceDatasetConfig(source={"manifest": manifest}, detection={"backend": "none", "size": 32},
                               max_bad_fraction=0.15)  # 2 of 22 rows pass ingestion's check, 4 of 22 do not
    with pytest.raises(DataError, match=r"2 of 20 images gave no face crop \(2 unreadable\), and 2 rows were left "
                                        r"out at ingestion: 4 of 22 rows \(18.2%\)"):
        build_faces(config, tmp_path / "ws")


def test_source_of_crops_beside_a_pool_that_needs_detection(tmp_path):
    manifest = _source(tmp_path / "src", 20)
    pool = _blank_pool(tmp_path / "pool", 4)  # blank images: the opencv backend finds no face
    config = {"source": {"manifest": manifest, "detection": {"backend": "none"}},
              "unlabelled": {"folder": pool}, "detection": {"backend": "opencv", "size": 32}}
    with pytest.raises(DataError) as info:
        build_faces(FaceDatasetConfig(**config), tmp_path / "ws")
    message = str(info.value)
    assert message.startswith(f"unlabelled pool {pool}: 4 of 4 images gave no face crop (4 no face found)")
    assert "set 'unlabelled.detection: {backend: none}'" in message

    config["unlabelled"]["detection"] = {"multi_face": "skip"}  # still opencv
    sets = build_faces(FaceDatasetConfig(**config, max_bad_fraction=1.0), tmp_path / "ws")
    report = pd.read_csv(sets["test"].meta["reports"]["detection"], keep_default_na=False)
    assert (report["alignment"].head(20) == "none").all() and (report["status"].tail(4) == "no_face").all()
    assert {p.name.split("-")[0] for p in (tmp_path / "ws" / "crops").iterdir()} == {"none", "opencv"}
    detection = sets["labelled"].meta["detection"]
    assert (detection["source"]["backend"], detection["unlabelled"]["backend"]) == ("none", "opencv")
    assert detection["unlabelled"]["multi_face"] == "skip" and detection["source"]["multi_face"] == "largest"
    assert {"size": 32} .items() <= detection["unlabelled"].items()


def test_no_labelled_image_with_a_crop_says_so(tmp_path):
    manifest = _source(tmp_path / "src", 8, broken=8)
    config = FaceDatasetConfig(source={"manifest": manifest}, detection={"backend": "none", "size": 32},
                               max_bad_fraction=1.0)
    with pytest.raises(DataError, match=r"labelled source .*labels.csv: none of its 8 labelled images gave a face "
                                        r"crop \(8 unreadable\), so no subject is left"):
        build_faces(config, tmp_path / "ws")


def test_too_few_subjects_lists_them_and_the_lost_images(tmp_path):
    manifest = _source(tmp_path / "src", 10, broken=4, subjects=2)
    config = FaceDatasetConfig(source={"manifest": manifest}, detection={"backend": "none", "size": 32},
                               max_bad_fraction=0.5)
    with pytest.raises(TooFewSubjectsError) as info:
        build_faces(config, tmp_path / "ws")
    message = str(info.value)
    assert "needs at least 3 subjects, the labelled data has 2 (s0, s1)" in message
    assert "10 are labelled, and 4 of those gave no face crop (4 unreadable; see " in message


def test_gif_folder_source_builds_the_toy_contract(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(30):
        folder = tmp_path / "faces" / ("happy" if i % 2 else "neutral")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(folder / f"S{i % 10}_{i}.gif")
    config = FaceDatasetConfig(source={"folder": tmp_path / "faces", "subject_regex": r"^(S\d+)_"},
                               detection={"backend": "none", "size": 24, "channels": 1})
    sets = build_faces(config, tmp_path / "ws")
    assert len(sets["labelled"]) + len(sets["test"]) == 30 and sets["test"].image_shape == (24, 24, 1)
    assert sets["test"].meta["classes"] == ["happiness", "neutral"]


@needs_fer
@needs_jaffe_lfw
def test_fer2013_crops_as_they_are_with_an_lfw_pool_that_is_detected(tmp_path):
    manifest = _subset(SHARED / "fer2013-privatetest" / "labels.csv", tmp_path / "fer.csv", per_group=4, by="emotion")
    config = FaceDatasetConfig(
        source={"manifest": manifest, "detection": {"backend": "none"}},
        unlabelled={"manifest": SHARED / "lfw-pairs" / "identities.csv", "limit": 12},
        detection={"backend": "opencv", "size": 48, "channels": 1}, split={"allow_missing_subject": True},
    )
    sets = build_faces(config, tmp_path / "ws")
    report = pd.read_csv(sets["test"].meta["reports"]["detection"], keep_default_na=False)
    assert (report["alignment"].head(28) == "none").all()
    assert set(report["alignment"].tail(12)) <= {"eyes", "box", "profile_box", ""}
    assert len(sets["unlabelled"]) >= 10 and sets["unlabelled"].image_shape == (48, 48, 1)
