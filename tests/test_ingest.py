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


# ----------------------------------------------------------------------------- scales, ignored columns

def _rows_csv(tmp_path: Path, header: str, rows: list[str]) -> FaceDatasetConfig:
    names = [f"i{i}.png" for i in range(len(rows))]
    _images(tmp_path, names)
    text = header + "\n" + "".join(f"{name},s{i % 5},{row}\n" for i, (name, row) in enumerate(zip(names, rows)))
    return _manifest(tmp_path, text)


def test_presence_column_with_a_few_values_above_1_is_an_error_naming_column_and_rows(tmp_path):
    # AU12: 0/1 with two 3s (lines 5 and 12); read as 0-5 every 1 would become 0.2
    values = ["1", "0", "1", "3", "1", "0", "1", "1", "1", "1", "3", "1", "1", "0", "1", "1"]
    config = _rows_csv(tmp_path, "path,subject,AU01,AU12", [f"{i % 2},{v}" for i, v in enumerate(values)])
    with pytest.raises(IngestError) as info:
        ingest(config)
    message = str(info.value)
    assert "labels.csv" in message and "'AU12'" in message and "rows 5, 12 hold 3" in message
    assert "'AU12_c'" in message and "'AU12_r'" in message and "AU01" not in message


def test_suffix_settles_the_ambiguous_column(tmp_path):
    values = ["1", "0", "1", "3", "1", "0", "1", "1", "1", "1"]
    config = _rows_csv(tmp_path, "path,subject,AU12_c", values)
    config = config.model_copy(update={"max_bad_fraction": 0.5})
    result = ingest(config)
    assert result.label_type == "au_presence" and len(result.frame) == 9
    assert result.report.loc[0, "reason"] == "3 is not a presence label (0 or 1)" and result.report.loc[0, "row"] == 5
    (tmp_path / "labels.csv").write_text((tmp_path / "labels.csv").read_text().replace("AU12_c", "AU12_r"))
    result = ingest(config)
    assert result.label_type == "au_intensity"
    np.testing.assert_allclose(result.frame["AU12"].head(4), [0.2, 0.0, 0.2, 0.6])


def test_integer_intensities_with_many_ones_stay_intensities(tmp_path):
    # a DISFA-like 0-5 coding: level 1 common, but a third of the non-zero values above 1
    values = ["0", "1", "1", "2", "0", "1", "3", "1", "5", "1", "0", "2"]
    result = ingest(_rows_csv(tmp_path, "path,subject,AU12", values))
    assert result.label_type == "au_intensity"
    np.testing.assert_allclose(result.frame["AU12"].head(4), [0.0, 0.2, 0.2, 0.4])


def test_bare_presence_beside_intensities_needs_a_decision(tmp_path):
    rows = ["1,0", "0,2", "1,5", "0,3", "1,0"]
    config = _rows_csv(tmp_path, "path,subject,AU01,AU12", rows)
    with pytest.raises(IngestError, match=r"AU column AU01 holds only 0 and 1 while AU12 holds intensities.*AU01_c"):
        ingest(config)
    result = ingest(config.model_copy(update={"label_type": "au_intensity"}))
    assert result.label_columns == ["AU1", "AU12"]
    np.testing.assert_allclose(result.frame[["AU1", "AU12"]].head(2), [[0.2, 0.0], [0.0, 0.4]])
    presence = ingest(config.model_copy(update={"label_type": "au_presence"}))
    assert presence.frame["AU12"].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_unknown_columns_are_logged_and_listed(tmp_path, caplog):
    config = _rows_csv(tmp_path, "path,subject,AU01,AU99,smile,emotion", ["1,1,yes,happy", "0,0,no,sad"])
    with caplog.at_level("WARNING", logger="ausynth"):
        result = ingest(config)
    assert result.label_columns == ["AU1"]
    assert result.ignored == {"AU99": "AU99 is not a FACS action unit",
                              "smile": "not a path, subject or label column",
                              "emotion": "a label of another type; label_type is au_presence"}
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "labels.csv: ignored column(s) 'AU99' (AU99 is not a FACS action unit); 'smile'" in warning


def test_only_non_facs_au_columns_is_no_label(tmp_path):
    with pytest.raises(IngestError, match=r"no label columns.*AU99: no FACS action unit numbers"):
        ingest(_rows_csv(tmp_path, "path,subject,AU99", ["1", "0"]))


def test_label_columns_all_empty_is_an_error_naming_them(tmp_path):
    with pytest.raises(IngestError) as info:
        ingest(_rows_csv(tmp_path, "path,subject,AU01,AU12", [",", ",", ","]))
    assert str(info.value).startswith(f"{tmp_path / 'labels.csv'}: none of its 3 rows has a usable label: 3 have "
                                      "every label column (AU01, AU12) empty")


# ----------------------------------------------------------------------------- files that cannot be read

def test_missing_empty_and_header_only_manifests_name_the_file(tmp_path):
    config = FaceDatasetConfig(source={"manifest": tmp_path / "labels.csv"})
    with pytest.raises(IngestError, match=f"manifest {tmp_path / 'labels.csv'} does not exist"):
        ingest(config)
    (tmp_path / "labels.csv").write_bytes(b"")
    with pytest.raises(IngestError, match=r"labels.csv is empty \(0 bytes\)"):
        ingest(config)
    (tmp_path / "labels.csv").write_text("path,subject,AU01\n")
    with pytest.raises(IngestError, match=r"labels.csv has a header \(path, subject, AU01\) but no rows"):
        ingest(config)


def test_manifest_encodings(tmp_path, caplog):
    _images(tmp_path, ["a.png", "b.png"])
    text = "path,subject,emotion\na.png,José,happy\nb.png,Zoë,sad\n"
    config = FaceDatasetConfig(source={"manifest": tmp_path / "labels.csv"})
    for encoding in ("utf-8", "utf-8-sig", "utf-16", "cp1252"):
        (tmp_path / "labels.csv").write_bytes(text.encode(encoding))
        caplog.clear()
        with caplog.at_level("WARNING", logger="ausynth"):
            result = ingest(config)
        assert result.frame["subject"].tolist() == ["José", "Zoë"], encoding
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert ("Windows-1252" in warned) == (encoding == "cp1252") and ("UTF-16" in warned) == (encoding == "utf-16")
    (tmp_path / "labels.csv").write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(IngestError, match="not CSV text: it seems to be a zip archive or an Excel .xlsx workbook"):
        ingest(config)
    (tmp_path / "labels.csv").write_bytes(text.encode("utf-16-le"))
    with pytest.raises(IngestError, match="UTF-16 text without a byte-order mark"):
        ingest(config)


def test_malformed_manifest_names_the_file_and_line(tmp_path):
    _images(tmp_path, ["a.png"])
    with pytest.raises(IngestError, match=r"labels.csv is not a well-formed CSV: .*line 3"):
        ingest(_manifest(tmp_path, "path,subject,AU01\na.png,s1,1\na.png,s1,1,4,5\n"))


def test_empty_folder_says_what_was_looked_for(tmp_path):
    (tmp_path / "faces" / "happy").mkdir(parents=True)
    (tmp_path / "faces" / "happy" / "a.heic").write_bytes(b"x")
    with pytest.raises(IngestError) as info:
        ingest(FaceDatasetConfig(source={"folder": tmp_path / "faces"}))
    message = str(info.value)
    assert message.startswith(f"no images found in {tmp_path / 'faces'} (looked for .jpg, .jpeg, .png, .bmp, .gif")
    assert "it holds 1 other file: .heic (1)" in message


def test_gif_folder_is_found(tmp_path):
    for i, emotion in enumerate(["happy", "sad", "happy"]):
        (tmp_path / "faces" / emotion).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / "faces" / emotion / f"S{i}_x.gif")
    result = ingest(FaceDatasetConfig(source={"folder": tmp_path / "faces", "subject_regex": r"^(S\d)_"}))
    assert len(result.frame) == 3 and result.classes == ["happiness", "sadness"]
    assert (result.frame["section"] == "source").all() and result.read["source"].rows == 3


def test_ckplus_binary_aus_are_presence_and_the_emotion_column_is_reported():
    from conftest import shared_data

    ckplus = shared_data("ckplus-au-dev")
    result = ingest(FaceDatasetConfig(source={"manifest": ckplus / "labels.csv"}))
    assert result.label_type == "au_presence" and len(result.label_columns) == 24 and result.report.empty
    assert result.ignored == {"emotion": "a label of another type; label_type is au_presence"}


def test_ckplus_with_a_few_intensities_mixed_in_is_refused(tmp_path):
    from conftest import shared_data

    ckplus = shared_data("ckplus-au-dev")
    frame = pd.read_csv(ckplus / "labels.csv", dtype=str)
    frame["path"] = [str(ckplus / p) for p in frame["path"]]
    ones = frame.index[frame["AU12"] == "1"]
    frame.loc[ones[[3, 10]], "AU12"] = "4"  # two stray values among many presence 1s
    frame.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(IngestError) as info:
        ingest(FaceDatasetConfig(source={"manifest": tmp_path / "labels.csv"}))
    rows = ", ".join(str(i + 2) for i in ones[[3, 10]])
    assert f"column 'AU12' holds 0 and 1, but rows {rows} hold 4" in str(info.value)


def test_ingest_errors_are_data_errors():
    from ausynth.tasks.errors import DataError

    assert issubclass(IngestError, DataError) and issubclass(IngestError, ValueError)
