"""An unlabelled pool configured alone: ``ausynth prepare`` detects and crops it, a later run with a labelled
source reads those crops from the cache, and a comparison or a generator is refused before any work."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.flows import prepare_dataset  # noqa: F401  imports prefect.main (its logging setup) outside a test
from ausynth.flows.cli import main
from ausynth.tasks import detect
from ausynth.tasks.errors import ConfigError
from ausynth.tasks.face_dataset import build_faces

from conftest import shared_data

POOL = 12


def pool_config(tmp_path, **extra) -> dict:
    lfw = shared_data("lfw-pairs")
    return {"unlabelled": {"manifest": str(lfw / "identities.csv"), "limit": POOL},
            "detection": {"backend": "opencv", "size": 48, "channels": 1}, **extra}


def write_config(tmp_path, dataset: dict) -> str:
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump({"name": "pool", "workspace": str(tmp_path / "ws"), "seeds": [0],
                                    "dataset": {"kind": "faces", **dataset}}))
    return str(path)


def test_prepare_crops_a_pool_alone_into_the_store(tmp_path):
    assert main(["prepare", write_config(tmp_path, pool_config(tmp_path))]) == 0
    entry = next((tmp_path / "ws" / "store" / "datasets").iterdir())
    assert sorted(p.name for p in entry.iterdir() if not p.name.startswith(".")) == ["reports", "unlabelled"]
    assert sorted(p.name for p in (entry / "reports").iterdir()) == ["detection.csv", "ingest.csv"]
    detection = pd.read_csv(entry / "reports" / "detection.csv")
    assert len(detection) == POOL and detection["cropped"].sum() >= POOL - 1


def test_a_later_run_with_a_labelled_source_reuses_the_pools_crops(tmp_path, monkeypatch):
    pool = build_faces(FaceDatasetConfig(**pool_config(tmp_path)), tmp_path / "ws")
    assert set(pool) == {"unlabelled"} and pool["unlabelled"].image_shape == (48, 48, 1)
    assert pool["unlabelled"].label_columns == [] and "split" not in pool["unlabelled"].meta["reports"]
    ckplus = shared_data("ckplus-au-dev")
    labels = pd.read_csv(ckplus / "labels.csv").groupby("subject").head(2)
    labels["path"] = [str(ckplus / p) for p in labels["path"]]
    labels.to_csv(tmp_path / "ck.csv", index=False)
    source = {"manifest": str(tmp_path / "ck.csv"), "detection": {"backend": "none"}}
    monkeypatch.setattr(detect, "make_backend", lambda cfg: pytest.fail("the pool's crops should come from the cache"))
    sets = build_faces(FaceDatasetConfig(**pool_config(tmp_path), source=source), tmp_path / "ws")
    assert len(sets["unlabelled"]) > 0 and set(sets) == {"labelled", "unlabelled", "test"}


@pytest.mark.parametrize("command", ["run", "train-generator"])
def test_a_pool_alone_cannot_be_compared_or_train_a_generator(tmp_path, capsys, command):
    assert main([command, write_config(tmp_path, pool_config(tmp_path))]) == ConfigError.exit_code
    err = " ".join(capsys.readouterr().err.split())
    assert "unlabelled pool alone (no dataset.source)" in err and "ausynth prepare" in err
    assert not (tmp_path / "ws" / "store").exists()


def test_validate_says_a_pool_alone_is_for_prepare_only(tmp_path, capsys):
    assert main(["validate", write_config(tmp_path, pool_config(tmp_path))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "valid" in out and "unlabelled pool alone: valid for `ausynth prepare` only" in out


def test_a_dataset_needs_a_source_or_a_pool():
    with pytest.raises(ValidationError, match="give a labelled 'source', an 'unlabelled' pool, or both"):
        FaceDatasetConfig()
