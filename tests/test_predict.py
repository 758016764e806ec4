"""``ausynth predict``: a tiny comparison's classifier scores PNG files, from the registry and from the store."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ausynth.flows.cli import main
from ausynth.flows.compare import compare_strategies
from ausynth.tasks import classifiers, datasets, predict
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.store import StoredItem
from ausynth.tasks.train_classifier import predict_proba

from conftest import TINY

pytestmark = pytest.mark.slow

MODEL = "ausynth-toy-au-classifier"  # the toy-quick config's experiment, + -au-classifier
AUS = [f"AU0{k}" for k in range(1, 10)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A supervised-only tiny comparison (its model registered as champion), and 12 of its test images as PNGs
    beside a file that is no image."""
    root = tmp_path_factory.mktemp("predict")
    workspace = root / "ws"
    compare_strategies("toy-quick", overrides=[*TINY, "strategies=[supervised]", f"workspace={workspace}"])
    dataset = next((workspace / "store" / "datasets").iterdir())
    images = datasets.load_set(StoredItem(dataset, dataset.name), "test").images[:12]
    folder = root / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(folder / f"face{i:02d}.png")
    (folder / "broken.png").write_text("not an image")
    model_dir = next((workspace / "store" / "classifiers").iterdir())
    return workspace, folder, images, model_dir


def run_predict(trained, tmp_path, *args):
    workspace, folder = trained[:2]
    out = tmp_path / "out" / "predictions.csv"
    code = main(["predict", str(folder), "--out", str(out), "--workspace", str(workspace), *args])
    return code, out


def own_scores(model_dir, images):
    device = torch.device("cpu")
    return predict_proba(classifiers.load_classifier(StoredItem(model_dir, model_dir.name), device), images, device)


@pytest.mark.parametrize("source", ["registry", "store"])
def test_openface_columns_a_row_per_image_and_the_models_own_scores(trained, tmp_path, capsys, source):
    workspace, folder, images, model_dir = trained
    model = MODEL if source == "registry" else str(model_dir)
    code, out = run_predict(trained, tmp_path, "--model", model)
    assert code == 0 and not list(out.parent.glob(".*.tmp"))
    said = " ".join(capsys.readouterr().out.split())
    assert f"{out}: 12 of 13 images scored with" in said and "no crop for 1 (unreadable)" in said
    table = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(table.columns) == ["file", "face", "success", "status", "faces", "alignment", "reason",
                                   *[f"{au}_p" for au in AUS], *[f"{au}_c" for au in AUS]]
    assert len(table) == 13 and table["file"].tolist() == ["broken.png", *[f"face{i:02d}.png" for i in range(12)]]
    broken, faces = table.iloc[0], table.iloc[1:]
    assert broken["success"] == 0 and broken["status"] == "unreadable" and "cannot decode" in broken["reason"]
    assert broken[[f"{au}_p" for au in AUS]].isna().all()
    assert (faces["success"] == 1).all() and (faces["face"] == 0).all() and (faces["status"] == "ok").all()
    expected = own_scores(model_dir, images)
    np.testing.assert_allclose(faces[[f"{au}_p" for au in AUS]].to_numpy(), expected, atol=1e-5)
    assert (faces[[f"{au}_c" for au in AUS]].to_numpy() == (expected >= 0.5)).all()


def test_a_registered_model_scores_on_the_cpu_where_a_gpu_is_visible(trained, monkeypatch):
    """Its exported program keeps the CPU weights it was traced with (MLflow will not move them): on a GPU
    machine the inputs must stay on the CPU too, or the first forward pass fails."""
    workspace, _, images, model_dir = trained
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    found = predict.load(MODEL, f"sqlite:///{workspace / 'mlflow.db'}")
    assert found.device == torch.device("cpu")
    np.testing.assert_allclose(predict.score(found, images), own_scores(model_dir, images), atol=1e-5)


def test_the_model_brings_its_crop_settings_and_only_the_backend_may_change(trained, tmp_path):
    info = json.loads((trained[3] / classifiers.INFO).read_text())
    assert info["input"] == {"image_shape": [96, 96, 1], "threshold": 0.5,
                             "detection": {"backend": "none", "multi_face": "largest", "size": 96, "channels": 1}}
    code, out = run_predict(trained, tmp_path, "--model", MODEL, "--detection", "opencv")
    table = pd.read_csv(out)
    assert code == 0 and len(table) == 13  # digit grids hold no face: every image recorded, none scored
    assert (table["success"] == 0).all() and set(table["status"]) == {"unreadable", "no_face"}


@pytest.mark.parametrize("model, expect", [
    ("no-such-model", ["no registered model 'no-such-model'", MODEL]),
    ("ws/store/classifiers/gone", ["no file or folder ws/store/classifiers/gone exists"]),
    (f"{MODEL}@best", ["has no alias 'best'", "champion -> version 1", f"{MODEL}@<alias>"]),
    (f"{MODEL}/7", ["has no version 7", "versions: 1"]),
])
def test_a_model_not_in_the_registry_is_named_with_what_is_there(trained, tmp_path, capsys, model, expect):
    code, out = run_predict(trained, tmp_path, "--model", model)
    err = capsys.readouterr().err
    assert code == 1 and not out.exists() and "Traceback" not in err
    for text in expect:
        assert text in " ".join(err.split())


def test_a_classifier_that_does_not_record_its_images_is_refused(trained, tmp_path, capsys):
    old = tmp_path / "old-classifier"
    shutil.copytree(trained[3], old)
    info = json.loads((old / classifiers.INFO).read_text())
    del info["input"]
    (old / classifiers.INFO).write_text(json.dumps(info))
    code, _ = run_predict(trained, tmp_path, "--model", str(old))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "does not record the images it was trained on (input missing)" in err
    assert f"Delete {old}" in err


def test_no_store_and_no_images_are_errors_saying_what_to_do(trained, tmp_path, capsys):
    assert main(["predict", str(trained[1]), "--model", MODEL, "--workspace", str(tmp_path / "empty")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"no MLflow store at {tmp_path / 'empty' / 'mlflow.db'}" in err and "--tracking-uri" in err
    assert not (tmp_path / "empty" / "mlflow.db").exists()
    (tmp_path / "none").mkdir()
    assert main(["predict", str(tmp_path / "none"), "--model", str(trained[3]), "--workspace", str(tmp_path)]) == 1
    assert "no images found in" in " ".join(capsys.readouterr().err.split())


def test_a_manifest_lists_the_images_and_a_missing_file_keeps_its_row(trained, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path\n{trained[1] / 'face00.png'}\nmissing.png\n")
    out = tmp_path / "m.csv"
    assert main(["predict", str(manifest), "--model", str(trained[3]), "--out", str(out),
                 "--workspace", str(tmp_path)]) == 0
    table = pd.read_csv(out)
    assert table["file"].tolist() == [str(trained[1] / "face00.png"), "missing.png"]
    assert table["success"].tolist() == [1, 0] and "cannot read file" in table.loc[1, "reason"]


def test_a_face_classifier_records_its_labelled_sources_detection():
    detection = {"source": {"backend": "opencv", "multi_face": "central", "size": 48, "channels": 1},
                 "unlabelled": {"backend": "face_alignment", "multi_face": "largest", "size": 48, "channels": 1}}
    train = ImageSet(np.zeros((2, 48, 48, 1), np.uint8), pd.DataFrame({"AU1": [0.0, 1.0]}), ["AU1"],
                     {"detection": detection})
    assert classifiers.input_record(train, 0.6) == {
        "image_shape": [48, 48, 1], "threshold": 0.6,
        "detection": {"backend": "opencv", "multi_face": "central", "size": 48, "channels": 1}}
