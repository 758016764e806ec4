"""Ingestion: AU naming and scales, emotions, valence/arousal, per-row problems, the three sources."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.tasks.ingest import IngestError, ingest

SHARED = Path(os.environ.get("AUSYNTH_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def _images(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(folder / name)


def _manifest(tmp_path: Path, text: str, **config) -> FaceDatasetConfig:
    (tmp_path / "labels.csv").write_text(text)
    return FaceDatasetConfig(source={"manifest": tmp_path / "labels.csv"}, **config)


def test_au_naming_variants_become_one_name(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    config = _manifest(tmp_path, "path,subject,AU01,AU2,au_04,AU12_c\na.png,s1,1,0,1,1\nb.png,s2,0,1,0,0\n")
    result = ingest(config)
    assert result.label_type == "au_presence"
    assert result.label_columns == ["AU1", "AU2", "AU4", "AU12"]
    assert result.frame[result.label_columns].to_numpy().tolist() == [[1, 0, 1, 1], [0, 1, 0, 0]]
    assert Path(result.frame.loc[0, "path"]).is_absolute()


def test_intensities_on_0_to_5_are_scaled(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    config = _manifest(tmp_path, "path,subject,AU06_r,AU12\na.png,s1,5,2.5\nb.png,s2,0,0\nc.png,s3,1,5\n")
    result = ingest(config)
    assert result.label_type == "au_intensity"
    np.testing.assert_allclose(result.frame[["AU6", "AU12"]].to_numpy(), [[1.0, 0.5], [0, 0], [0.2, 1.0]])


def test_intensities_already_on_0_to_1_stay(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    result = ingest(_manifest(tmp_path, "path,subject,AU12\na.png,s1,0.3\nb.png,s2,0.9\n"))
    np.testing.assert_allclose(result.frame["AU12"], [0.3, 0.9])


def test_presence_from_intensity_uses_the_threshold(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    config = _manifest(tmp_path, "path,subject,AU12_r\na.png,s1,1.5\nb.png,s2,2\nc.png,s3,4\n",
                       label_type="au_presence", presence_threshold=2.0)
    assert ingest(config).frame["AU12"].tolist() == [0.0, 1.0, 1.0]


def test_bad_rows_are_reported_and_the_rest_goes_on(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png", "d.png", "e.png"])
    text = ("path,subject,AU01_c,AU12_r\n"
            "a.png,s1,1,3\n"          # line 2: fine
            "b.png,s2,yes,1\n"        # line 3: unparseable
            "missing.png,s3,0,1\n"    # line 4: no file
            "c.png,s4,0,7\n"          # line 5: intensity out of 0..5
            "a.png,s1,1,3\n"          # line 6: duplicate
            "d.png,s5,,\n"            # line 7: no labels -> unlabelled
            "e.png,s6,2,1\n")         # line 8: presence not 0/1
    result = ingest(_manifest(tmp_path, text, label_type="au_intensity", max_bad_fraction=1.0))
    assert result.frame["path"].map(lambda p: Path(p).name).tolist() == ["a.png", "b.png", "d.png", "e.png"]
    assert result.frame["origin"].tolist() == ["labelled", "labelled", "unlabelled", "labelled"]
    report = result.report.set_index("row")
    assert "cannot parse" not in report["reason"].to_string()  # AU01_c is not used for intensities
    assert report.loc[4, "reason"].startswith("file not found")
    assert report.loc[5, "reason"] == "7 is outside 0..5" and report.loc[5, "column"] == "AU12_r"
    assert report.loc[6, "reason"] == "duplicate of row 2"

    presence = ingest(_manifest(tmp_path, text, label_type="au_presence", max_bad_fraction=1.0)).report
    reasons = dict(zip(presence["row"], presence["reason"]))
    assert reasons[3] == "cannot parse 'yes' as a number"
    assert reasons[8] == "2 is not a presence label (0 or 1)"


def test_too_many_bad_rows_fail_naming_file_and_rows(tmp_path):
    _images(tmp_path, ["a.png"])
    config = _manifest(tmp_path, "path,subject,AU1\na.png,s1,1\nx.png,s2,1\ny.png,s3,1\n", max_bad_fraction=0.5)
    with pytest.raises(IngestError) as info:
        ingest(config)
    message = str(info.value)
    assert "labels.csv" in message and "2 of 3 rows" in message and "row 3 (x.png)" in message


def test_no_label_columns_is_a_clear_error(tmp_path):
    _images(tmp_path, ["a.png"])
    with pytest.raises(IngestError, match="no label columns.*unlabelled"):
        ingest(_manifest(tmp_path, "path,subject\na.png,s1\n"))


def test_emotions_are_normalised_and_one_hot(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    text = "file,identity,emotion\na.png,s1,Happy\nb.png,s2,angry\nc.png,s3,\nd.png,s4,contempt\n"
    result = ingest(_manifest(tmp_path, text, emotions=["anger", "happiness"], max_bad_fraction=0.5))
    assert result.label_type == "emotion" and result.classes == ["anger", "happiness"]
    assert result.label_columns == ["emotion_anger", "emotion_happiness"]
    assert result.frame["emotion"].tolist()[:2] == ["happiness", "anger"]
    assert result.frame["origin"].tolist() == ["labelled", "labelled", "unlabelled"]
    assert "is not one of" in result.report.loc[0, "reason"] and result.report.loc[0, "row"] == 5


def test_valence_arousal_range(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    result = ingest(_manifest(tmp_path, "path,subject,valence,arousal\na.png,s1,0.5,-0.2\nb.png,s2,3,0\n",
                              max_bad_fraction=0.5))
    assert result.label_type == "valence_arousal" and result.label_columns == ["valence", "arousal"]
    assert len(result.frame) == 1 and result.report.loc[0, "reason"] == "3 is outside -1..1"


def test_folder_labels_from_sub_folders_subject_from_regex(tmp_path):
    _images(tmp_path / "faces", ["happy/S01_001.png", "happy/S02_004.png", "sad/S01_002.png", "S03_009.png"])
    config = FaceDatasetConfig(source={"folder": tmp_path / "faces", "subject_regex": r"^(?P<subject>S\d+)_"})
    result = ingest(config)
    frame = result.frame.assign(name=result.frame["path"].map(lambda p: Path(p).name)).set_index("name")
    assert result.classes == ["happiness", "sadness"]
    assert frame.loc["S01_002.png", "emotion_sadness"] == 1.0 and frame.loc["S02_004.png", "subject"] == "S02"
    assert frame.loc["S03_009.png", "origin"] == "unlabelled"


def test_openface_per_image_csvs_join_their_images(tmp_path):
    _images(tmp_path / "img", ["S1_a.png", "S2_b.png", "S2_c.png"])
    (tmp_path / "of").mkdir()
    header = "face, confidence, AU01_r, AU12_r, AU01_c, AU12_c\n"
    (tmp_path / "of" / "S1_a.csv").write_text(header + "0, 0.98, 2.5, 0.0, 1, 0\n1, 0.30, 0, 5, 0, 1\n")
    (tmp_path / "of" / "S2_b.csv").write_text(header + "0, 0.95, 0.0, 5.0, 0, 1\n")
    (tmp_path / "of" / "S2_x.csv").write_text(header + "0, 0.95, 0.0, 5.0, 0, 1\n")  # no such image
    source = {"openface": tmp_path / "of", "image_root": tmp_path / "img", "subject_regex": r"^(S\d)_"}
    config = FaceDatasetConfig(source=source, label_type="au_intensity", max_bad_fraction=0.5)
    result = ingest(config)
    assert result.label_columns == ["AU1", "AU12"]
    # S1_a: the most confident of its two faces
    np.testing.assert_allclose(result.frame[["AU1", "AU12"]].to_numpy(), [[0.5, 0.0], [0.0, 1.0]])
    assert result.frame["subject"].tolist() == ["S1", "S2"]
    assert result.report["reason"].str.contains("file not found").tolist() == [True]


def test_openface_sequence_csv_maps_frames_to_images(tmp_path):
    _images(tmp_path / "img" / "SN001", ["0001.png", "0002.png", "0003.png"])
    (tmp_path / "SN001.csv").write_text(
        "frame, face_id, timestamp, confidence, success, AU06_c, AU12_c\n"
        "1, 0, 0.0, 0.98, 1, 1, 1\n2, 0, 0.04, 0.10, 0, 0, 0\n3, 0, 0.08, 0.97, 1, 0, 1\n")
    config = FaceDatasetConfig(source={"openface": tmp_path / "SN001.csv", "image_root": tmp_path / "img"},
                               max_bad_fraction=0.5)
    result = ingest(config)
    assert result.frame["path"].map(lambda p: Path(p).name).tolist() == ["0001.png", "0003.png"]
    assert result.frame["subject"].tolist() == ["SN001", "SN001"]
    assert result.report.loc[0, "reason"].startswith("OpenFace did not track")


def test_unlabelled_pool_joins_with_nan_labels(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "pool/x.png"])
    config = _manifest(tmp_path, "path,subject,AU1\na.png,s1,1\nb.png,s2,0\n",
                       unlabelled={"folder": tmp_path / "pool"})
    result = ingest(config)
    assert result.frame["origin"].tolist() == ["labelled", "labelled", "unlabelled"]
    assert np.isnan(result.frame.loc[2, "AU1"])


@pytest.mark.skipif(not (SHARED / "jaffe" / "labels.csv").is_file(), reason=f"JAFFE not found under {SHARED}")
def test_jaffe_manifest():
    result = ingest(FaceDatasetConfig(source={"manifest": SHARED / "jaffe" / "labels.csv"}))
    assert len(result.frame) == 213 and result.report.empty
    assert result.frame["subject"].nunique() == 10 and len(result.classes) == 7
    assert (result.frame[result.label_columns].sum(axis=1) == 1).all()
    assert pd.api.types.is_float_dtype(result.frame[result.label_columns].dtypes.iloc[0])


def test_two_columns_for_one_au_is_an_error(tmp_path):
    _images(tmp_path, ["a.png"])
    with pytest.raises(IngestError, match="'AU1' and 'AU01' both give AU1 presence"):
        ingest(_manifest(tmp_path, "path,subject,AU1,AU01\na.png,s1,1,1\n"))
