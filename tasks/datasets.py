"""The dataset stage: a config's labelled, unlabelled and test image sets, built once into the store.

Toy grids and face crops end up in the same three image sets (``IMAGE_SETS``); the labelled set
carries a ``split`` column (train / val). Every later stage reads them through ``load_set``. A face
dataset with a labelled neutral set (``dataset.neutral``) has a fourth set, ``NEUTRAL_SET``: the
faces the generator starts from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.configs.schema import ExperimentConfig
from ausynth.tasks import imageset
from ausynth.tasks.face_dataset import prepare_faces, write_reports
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.store import StoredItem, cached_folder, stable_hash
from ausynth.tasks.toy_data import build_toy, independent_config

FORMAT_VERSION = 3  # bump when a stage's output format changes, so old store entries are not reused
IMAGE_SETS = ("labelled", "unlabelled", "test")
NEUTRAL_SET = "neutral"  # only where the face config has dataset.neutral
INDEPENDENT_MAX_IMAGES = 12_000  # the 3K settings' total; the 30K settings' 120K would cost more than it adds


def store_root(cfg: ExperimentConfig) -> Path:
    return cfg.workspace.resolve() / "store"


def _source_fingerprint(cfg: FaceDatasetConfig) -> list:
    """Size and modification time of the files a face dataset reads, so edited inputs are rebuilt."""
    sources = [source for source in (cfg.source, cfg.unlabelled, cfg.neutral) if source is not None]
    roots = [p for src in sources for p in vars(src).values() if isinstance(p, Path) and p.exists()]
    files = [f for root in roots for f in ([root] if root.is_file() else sorted(root.rglob("*"))) if f.is_file()]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _write_sets(sets: dict[str, ImageSet], folder: Path) -> None:
    for name, part in sets.items():
        (folder / name).mkdir()
        imageset.write(part, folder / name)


def _build_sets(cfg: ExperimentConfig, folder: Path) -> None:
    if isinstance(cfg.dataset, FaceDatasetConfig):
        data = prepare_faces(cfg.dataset, cfg.workspace.resolve())
        sets = data.sets
        write_reports(data.reports, folder / "reports")
    else:
        sets = build_toy(cfg.dataset)
    _write_sets(sets, folder)


def prepare_dataset(cfg: ExperimentConfig) -> StoredItem:
    """Build (or reuse) the labelled, unlabelled and test image sets of the config's dataset."""
    faces = isinstance(cfg.dataset, FaceDatasetConfig)
    described = cfg.dataset.key_data() if faces else cfg.dataset
    key = stable_hash("dataset", described, _source_fingerprint(cfg.dataset) if faces else None, FORMAT_VERSION)
    path = cached_folder(store_root(cfg), "datasets", key, lambda folder: _build_sets(cfg, folder))
    return StoredItem(path, key)


def prepare_independent_toy(cfg: ExperimentConfig, draw_seed: int) -> StoredItem:
    """A toy set with AU2 and AU3 independent (``toy_data.independent_config``; toy configs only), as
    many labelled images as the comparison draws in all (labelled and unlabelled), at most
    ``INDEPENDENT_MAX_IMAGES``. Its key ignores the comparison's ``p_correlated``: every correlation
    setting shares it."""
    independent = independent_config(cfg.dataset, min(cfg.dataset.labelled + cfg.dataset.unlabelled,
                                                       INDEPENDENT_MAX_IMAGES))
    key = stable_hash("independent_toy", independent, draw_seed, FORMAT_VERSION)
    path = cached_folder(store_root(cfg), "independent_datasets", key,
                         lambda folder: _write_sets(build_toy(independent, draw_seed), folder))
    return StoredItem(path, key)


def load_set(dataset: StoredItem, name: str, mmap: bool = False) -> ImageSet:
    return imageset.load(dataset.path / name, mmap=mmap)


def has_neutral_set(dataset: StoredItem) -> bool:
    return (dataset.path / NEUTRAL_SET).is_dir()


def train_val(labelled: ImageSet) -> tuple[ImageSet, ImageSet]:
    """The labelled set's training and validation rows (its ``split`` column)."""
    split = labelled.frame["split"].to_numpy()
    return labelled.subset(np.flatnonzero(split == "train")), labelled.subset(np.flatnonzero(split == "val"))


def example_input(dataset: StoredItem, n: int = 2) -> np.ndarray:
    """A few test images as the classifier sees them (float32 NCHW in [-1, 1]): a signature example."""
    images = load_set(dataset, "test", mmap=True).images[:n]
    return np.transpose(images, (0, 3, 1, 2)).astype(np.float32) / 127.5 - 1.0
