"""Faces end to end (ingest -> crop -> identity split) on the real images in ../shared/data, in
the toy set's contract; and the config's validation messages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.configs.schema import ToyDatasetConfig
from ausynth.tasks import detect
from ausynth.tasks.face_dataset import build_faces
from ausynth.tasks.identity_split import MissingSubjectError
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
])
def test_config_errors_are_clear(config, message):
    with pytest.raises(ValidationError, match=message):
        FaceDatasetConfig(**config)
