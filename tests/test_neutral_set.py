"""A labelled neutral set (``dataset.neutral``) as the generator's sources: config checks, the set built
from the rows that carry the neutral value only (through the usual ingest and crop pipeline, into the
dataset's store entry), sources taken from it by label with the teacher's profile in ``sources.csv``,
and JAFFE's neutral images cropped for real when ../shared/data is there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import ValidationError
from torch import nn

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.configs.schema import ExperimentConfig
from ausynth.tasks import classifiers, datasets, face_dataset, generator_stage, imageset
from ausynth.tasks.checkpoint import TrainedGenerator
from ausynth.tasks.errors import DataError
from ausynth.tasks.face_dataset import build_faces
from ausynth.tasks.generate import neutral_set_sources
from ausynth.tasks.generator_kinds import Architecture, generator_kind
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.store import StoredItem, stable_hash

from conftest import shared_data

SUBJECTS = [f"s{i}" for i in range(10)]  # the labelled source's people
OTHERS = ["p0", "p1", "p2", "p3"]  # neutral faces of other people
NOT_NEUTRAL = [("p4", "happy"), ("p5", "anger"), ("p6", "surprise")]


def _png(path: Path, seed: int) -> str:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24), dtype=np.uint8), "L").save(path)
    return path.name


def faces(tmp_path: Path) -> dict[str, Path]:
    """A labelled AU manifest (3 images for each of 10 subjects) and a neutral manifest: one neutral image of
    every labelled subject, four of other people, and three rows with another emotion."""
    rows = [{"path": _png(tmp_path / f"{s}_{j}.png", 10 * i + j), "subject": s, "AU01": j % 2, "AU02": (j + i) % 2}
            for i, s in enumerate(SUBJECTS) for j in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    people = NOT_NEUTRAL + [(s, "neutral") for s in [*SUBJECTS, *OTHERS]]
    neutral = [{"path": _png(tmp_path / f"n_{s}.png", 500 + i), "subject": s, "emotion": emotion}
               for i, (s, emotion) in enumerate(people)]
    pd.DataFrame(neutral).to_csv(tmp_path / "neutral.csv", index=False)
    return {"labels": tmp_path / "labels.csv", "neutral": tmp_path / "neutral.csv"}


def face_config(files: dict[str, Path], **neutral) -> dict:
    return {"kind": "faces", "source": {"manifest": str(files["labels"])},
            "neutral": {"manifest": str(files["neutral"]), "column": "emotion", "value": "neutral", **neutral},
            "detection": {"backend": "none", "size": 24, "channels": 1},
            "split": {"val": 0.2, "test": 0.2, "draws": 3}}


# ----------------------------------------------------------------------------- config

def test_neutral_set_source_needs_dataset_neutral() -> None:
    for dataset in ({}, {"kind": "faces", "source": {"manifest": "labels.csv"}}):
        with pytest.raises(ValidationError, match=r"generator.neutral_source is 'neutral_set'.*dataset.neutral"):
            ExperimentConfig(dataset=dataset, generator={"neutral_source": "neutral_set"})


def test_neutral_set_column_and_value_come_together_and_need_a_source() -> None:
    with pytest.raises(ValidationError, match="'column' and 'value' together"):
        FaceDatasetConfig(source={"manifest": "a.csv"}, neutral={"manifest": "n.csv", "column": "emotion"})
    with pytest.raises(ValidationError, match="needs a labelled 'source'"):
        FaceDatasetConfig(unlabelled={"manifest": "a.csv"}, neutral={"manifest": "n.csv"})
    with pytest.raises(ValidationError, match="cannot differ per source"):
        FaceDatasetConfig(source={"manifest": "a.csv"}, neutral={"manifest": "n.csv", "detection": {"size": 48}})


def test_a_config_without_neutral_keeps_its_store_key(tmp_path) -> None:
    """Datasets built before the option existed (no 'neutral' in their hashed config) are found again."""
    files = faces(tmp_path)
    plain = {k: v for k, v in face_config(files).items() if k != "neutral"}
    cfg = ExperimentConfig(dataset=plain, workspace=tmp_path / "ws")
    before = {k: v for k, v in cfg.dataset.model_dump(mode="json").items() if k != "neutral"}
    expected = stable_hash("dataset", before, datasets._source_fingerprint(cfg.dataset), datasets.FORMAT_VERSION)
    assert datasets.prepare_dataset(cfg).key == expected
    assert face_dataset.reports_folder(cfg.dataset, tmp_path).name == f"faces-{stable_hash(before)}"


# ----------------------------------------------------------------------------- the set

def test_neutral_set_holds_the_neutral_rows_of_train_subjects_and_other_people(tmp_path) -> None:
    files = faces(tmp_path)
    cfg = ExperimentConfig(dataset=face_config(files), workspace=tmp_path / "ws")
    dataset = datasets.prepare_dataset(cfg)
    assert datasets.has_neutral_set(dataset)
    neutral = datasets.load_set(dataset, datasets.NEUTRAL_SET)
    labelled = datasets.load_set(dataset, "labelled")
    train = set(labelled.frame.loc[labelled.frame["split"] == "train", "subject"])
    assert set(neutral.frame["subject"]) == set(OTHERS) | train  # no other emotion; no val or test face
    assert neutral.image_shape == (24, 24, 1) and neutral.label_columns == labelled.label_columns
    assert np.isnan(neutral.labels).all() and (neutral.frame["origin"] == "neutral").all()
    assert len(datasets.load_set(dataset, "unlabelled")) == 0  # the neutral set is no pool
    # its manifest is part of the store key: an edited file is a new dataset
    pd.read_csv(files["neutral"]).head(-1).to_csv(files["neutral"], index=False)
    assert datasets.prepare_dataset(cfg).key != dataset.key


def test_limit_counts_neutral_rows(tmp_path) -> None:
    """The manifest starts with three other emotions: the limit of 6 takes the first 6 neutral rows."""
    sets = build_faces(FaceDatasetConfig(**face_config(faces(tmp_path), limit=6)), tmp_path / "ws")
    report = pd.read_csv(sets["neutral"].meta["reports"]["detection"])
    assert report["path"].str.contains("/n_").sum() == 6
    assert 0 < len(sets["neutral"]) <= 6 and set(sets["neutral"].frame["subject"]) <= set(SUBJECTS[:6])


def test_a_neutral_set_is_enough_for_the_generator_strategy_without_pool_or_neutral_labels(tmp_path) -> None:
    """Every labelled face shows an AU and there is no pool: only the neutral set has faces to edit."""
    from ausynth.tasks.preflight import check_inputs

    files = faces(tmp_path)
    pd.read_csv(files["labels"]).assign(AU01=1).to_csv(files["labels"], index=False)
    strategies = ["supervised", "generator"]
    with_set = ExperimentConfig(dataset=face_config(files), strategies=strategies, workspace=tmp_path / "ws")
    check_inputs(with_set, datasets.prepare_dataset(with_set))
    without = with_set.model_copy(update={"dataset": with_set.dataset.model_copy(update={"neutral": None})})
    with pytest.raises(DataError, match="no neutral set .dataset.neutral. nor an unlabelled pool"):
        check_inputs(without, datasets.prepare_dataset(without))


@pytest.mark.parametrize("neutral, says", [
    ({"value": "calm"}, r"neutral.csv has emotion = 'calm' \(values found: 'neutral' \(14\)"),
    ({"column": "expression"}, r"neutral.csv has no column 'expression'"),
])
def test_a_manifest_without_the_value_fails_before_any_crop(tmp_path, monkeypatch, neutral, says) -> None:
    monkeypatch.setattr(face_dataset, "detect_and_crop", lambda *a, **k: pytest.fail("cropped before the check"))
    with pytest.raises(DataError, match=says):
        build_faces(FaceDatasetConfig(**face_config(faces(tmp_path), **neutral)), tmp_path / "ws")


# ----------------------------------------------------------------------------- sources

COLUMNS = ["AU1", "AU2", "AU4", "AU12"]
SIZE, CELL = 32, 16


class CellClassifier(nn.Module):
    """Sees AU k exactly when cell k (2x2 grid, row-major) is bright: the teacher and the oracle here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 50 * F.avg_pool2d(x.mean(1, keepdim=True), CELL).flatten(1)


def grid_set(lit: list[list[int]], labels: np.ndarray, origin: str, prefix: str) -> ImageSet:
    images = np.full((len(lit), SIZE, SIZE, 1), 10, dtype=np.uint8)
    for i, cells in enumerate(lit):
        for k in cells:
            r, c = divmod(k, 2)
            images[i, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = 240
    frame = pd.DataFrame(labels.astype(np.float32), columns=COLUMNS)
    frame.insert(0, "subject", [f"{prefix}{i}" for i in range(len(lit))])
    frame.insert(1, "origin", origin)
    return ImageSet(images, frame, list(COLUMNS))


def test_neutral_set_sources_are_every_image_by_label_ordered_by_the_teacher() -> None:
    pool = grid_set([[], [0], []], np.full((3, 4), np.nan), "neutral", "n")
    scores = np.array([[0.3, 0, 0, 0], [0.9, 0, 0, 0], [0.1, 0, 0, 0]], np.float32)
    index, labels = neutral_set_sources(pool, scores, "au_presence")
    assert index.tolist() == [2, 0, 1]  # no threshold: the one the teacher finds smiling is still a source
    assert not labels.any()


@pytest.fixture
def stub_stage(tmp_path, monkeypatch):
    """A dataset entry with labelled, pool, test and neutral sets of 32x32 grids, and every trained model
    replaced: an untrained EM as the generator, a cell reader as teacher and oracle."""
    folder = tmp_path / "dataset"
    eye = np.eye(4)
    labelled = grid_set([[0], [1], [2], [3]], eye, "labelled", "s")
    labelled.frame["split"] = "train"
    sets = {"labelled": labelled, "unlabelled": grid_set([[]] * 3, np.full((3, 4), np.nan), "unlabelled", "pool"),
            "test": grid_set([[0], [1], [2], [3]], eye, "test", "t"),
            "neutral": grid_set([[], [3], []], np.full((3, 4), np.nan), "neutral", "jaffe")}
    for name, part in sets.items():
        (folder / name).mkdir(parents=True)
        imageset.write(part, folder / name)
    data = StoredItem(folder, "data")
    monkeypatch.setattr(classifiers, "load_classifier", lambda item, device: CellClassifier())
    scores = classifiers.score_pool(ExperimentConfig(workspace=tmp_path / "teacher", device="cpu"), data,
                                    StoredItem(tmp_path, "teacher"))  # the teacher scores pool and neutral set
    arch = Architecture("em", "au_presence", 4, 0, (SIZE, SIZE, 1), tuple(COLUMNS))
    torch.manual_seed(0)
    trained = TrainedGenerator(generator_kind("em").generator(arch).eval(), arch, Path("g.pt"), 0)
    monkeypatch.setattr(generator_stage, "load_generator", lambda path, device: trained)
    monkeypatch.setattr(generator_stage, "load_classifier", lambda item, device: CellClassifier())  # the oracle

    def run(neutral_source: str, size: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
        neutral = {"manifest": "n.csv", "column": "emotion", "value": "neutral"}
        cfg = ExperimentConfig(
            dataset={"kind": "faces", "source": {"manifest": "a.csv"}, "neutral": neutral}, augment={"size": size},
            generator={"neutral_source": neutral_source, "intensity": 0.7},
            workspace=tmp_path / f"ws-{neutral_source}-{size}", device="cpu")
        item = generator_stage.make_isolated(cfg, data, StoredItem(Path("g.pt"), "gen"), scores,
                                             StoredItem(tmp_path, "oracle"))
        made = pd.read_parquet(item.path / "images" / imageset.MANIFEST)
        return made, pd.read_csv(item.path / "sources.csv", index_col="label")

    return run


@pytest.mark.parametrize("neutral_source", ["neutral_set", "auto"])
def test_sources_come_from_the_neutral_set_with_the_teachers_profile(stub_stage, neutral_source) -> None:
    made, sources = stub_stage(neutral_source)
    assert len(made) == 8 and set(made["subject"]) == {"jaffe0", "jaffe2"}  # the two the teacher finds most neutral
    assert set(made["source_index"]) == {0, 2}
    assert sources["sources"].eq(2).all() and sources["max"].max() < 0.01


def test_sources_csv_shows_a_neutral_face_the_teacher_doubts(stub_stage) -> None:
    """Three sources needed: the one with a lit AU12 cell is taken too (neutral by label, no threshold), and
    sources.csv shows the teacher sees AU12 in it."""
    made, sources = stub_stage("neutral_set", size=12)
    assert set(made["subject"]) == {"jaffe0", "jaffe1", "jaffe2"}
    assert sources.loc["AU12", "max"] > 0.99 and sources.drop(index="AU12")["max"].max() < 0.01


def test_pool_source_ignores_the_neutral_set(stub_stage) -> None:
    made, _ = stub_stage("pool")
    assert set(made["subject"]) <= {"pool0", "pool1", "pool2"}


# ----------------------------------------------------------------------------- real data

def test_jaffe_neutral_images_are_cropped_as_ckplus_sources(tmp_path) -> None:
    """CK+ (ready 48x48 crops) as the labelled source, JAFFE's neutral photos detected and cropped to match."""
    jaffe, ckplus = shared_data("jaffe"), shared_data("ckplus-au-dev")
    frame = pd.read_csv(ckplus / "labels.csv", keep_default_na=False)
    frame = frame[frame["subject"].isin(sorted(set(frame["subject"]))[:12])]
    frame["path"] = [str(ckplus / p) for p in frame["path"]]
    frame.to_csv(tmp_path / "ckplus.csv", index=False)
    config = FaceDatasetConfig(
        label_type="au_presence", source={"manifest": tmp_path / "ckplus.csv", "detection": {"backend": "none"}},
        neutral={"manifest": jaffe / "labels.csv", "column": "emotion", "value": "neutral",
                 "detection": {"backend": "opencv"}},
        detection={"backend": "opencv", "size": 48, "channels": 1}, split={"draws": 3})
    sets = build_faces(config, tmp_path / "ws")
    neutral = sets["neutral"]
    assert neutral.image_shape == (48, 48, 1) and neutral.label_columns == sets["labelled"].label_columns
    assert len(neutral) >= 27  # of JAFFE's 30 neutral images
    assert neutral.frame["path"].str.contains(r"\.NE\d").all()
    assert len(set(neutral.frame["subject"])) == 10
    report = pd.read_csv(sets["neutral"].meta["reports"]["detection"])
    assert report["path"].str.contains("jaffe").sum() == 30
