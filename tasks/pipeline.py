"""The comparison's stages as plain functions over the content-addressed store.

Each stage's output lives in ``workspace/store/<kind>/<key>``, the key hashing everything
that determines it, so an unchanged re-run reuses finished work and a changed config gets a
new folder. The Prefect tasks in ``prefect_tasks`` only wrap these.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.configs.schema import ExperimentConfig
from ausynth.models.au_classifier import AUClassifier
from ausynth.tasks import imageset, strategies
from ausynth.tasks.device import resolve_device
from ausynth.tasks.face_dataset import prepare_faces, write_reports
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.metrics import error_matrix, evaluate_predictions
from ausynth.tasks.store import cached_folder, stable_hash
from ausynth.tasks.toy_data import build_toy
from ausynth.tasks.train_classifier import predict_proba, train_classifier

log = logging.getLogger("ausynth")

FORMAT_VERSION = 2  # bump when a stage's output format changes, so old store entries are not reused
SPLITS = ("labelled", "unlabelled", "test")


@dataclass(frozen=True)
class StoredItem:
    """A finished stage output: where it is and the key that named it."""

    path: Path
    key: str


@dataclass
class Evaluation:
    strategy: str
    seed: int
    label_type: str
    per_au: pd.DataFrame
    metrics: dict[str, float]
    model: AUClassifier
    fp_matrix: np.ndarray | None
    history: list[dict[str, float]]
    info: dict


def store_root(cfg: ExperimentConfig) -> Path:
    return cfg.workspace.resolve() / "store"


def _source_fingerprint(cfg: FaceDatasetConfig) -> list:
    """Size and modification time of the files a face dataset reads, so edited inputs are rebuilt."""
    sources = [cfg.source, cfg.unlabelled] if cfg.unlabelled else [cfg.source]
    roots = [p for src in sources for p in vars(src).values() if isinstance(p, Path) and p.exists()]
    files = [f for root in roots for f in ([root] if root.is_file() else sorted(root.rglob("*"))) if f.is_file()]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _build_sets(cfg: ExperimentConfig, folder: Path) -> None:
    if isinstance(cfg.dataset, FaceDatasetConfig):
        data = prepare_faces(cfg.dataset, cfg.workspace.resolve())
        sets = data.sets
        write_reports(data.reports, folder / "reports")
    else:
        sets = build_toy(cfg.dataset)
    for name, part in sets.items():
        (folder / name).mkdir()
        imageset.write(part, folder / name)


def prepare_dataset(cfg: ExperimentConfig) -> StoredItem:
    """Build (or reuse) the labelled, unlabelled and test image sets of the config's dataset."""
    faces = isinstance(cfg.dataset, FaceDatasetConfig)
    key = stable_hash("dataset", cfg.dataset, _source_fingerprint(cfg.dataset) if faces else None, FORMAT_VERSION)
    path = cached_folder(store_root(cfg), "datasets", key, lambda folder: _build_sets(cfg, folder))
    return StoredItem(path, key)


def load_split(dataset: StoredItem, name: str) -> ImageSet:
    return imageset.load(dataset.path / name)


def _model_key(cfg: ExperimentConfig, dataset: StoredItem, strategy: str, seed: int, teacher: StoredItem | None,
               generated: StoredItem | None) -> str:
    added = {"upsample": cfg.augment, "pseudo_label": (cfg.augment, cfg.pseudo_label, teacher and teacher.key),
             "generator": (cfg.augment, generated and generated.key)}
    return stable_hash("classifier", dataset.key, strategy, seed, cfg.classifier, added.get(strategy), FORMAT_VERSION)


def added_images(cfg: ExperimentConfig, dataset: StoredItem, strategy: str, seed: int,
                 teacher: StoredItem | None, generated: StoredItem | None = None) -> ImageSet | None:
    """The images a strategy adds to the labelled training rows."""
    if strategy == "supervised":
        return None
    if strategy == "upsample":
        train, _ = strategies.train_val(load_split(dataset, "labelled"))
        return strategies.upsample(train, cfg.augment.size, seed)
    if strategy == "pseudo_label":
        if teacher is None:
            raise ValueError("the pseudo_label strategy needs a trained teacher classifier")
        scores = np.load(teacher.path / "pool_scores.npy")
        return strategies.pseudo_label(load_split(dataset, "unlabelled"), scores, cfg.augment.size,
                                       cfg.pseudo_label, cfg.classifier.threshold, seed)
    if strategy == "generator":
        if generated is None:
            raise ValueError("the generator strategy needs generated images")
        return strategies.sample(imageset.load(generated.path / "images"), cfg.augment.size, seed)
    raise ValueError(f"unknown strategy {strategy!r}")


def fit_classifier(cfg: ExperimentConfig, dataset: StoredItem, strategy: str, seed: int,
                   teacher: StoredItem | None = None, generated: StoredItem | None = None) -> StoredItem:
    """Train (or reuse) the classifier of one (strategy, seed) and store its weights and history."""
    key = _model_key(cfg, dataset, strategy, seed, teacher, generated)

    def build(folder: Path) -> None:
        train, val = strategies.train_val(load_split(dataset, "labelled"))
        data = strategies.training_set(train, added_images(cfg, dataset, strategy, seed, teacher, generated))
        device = resolve_device(cfg.device)
        trained = train_classifier(data, val, cfg.classifier, seed, device, desc=f"{strategy}/seed{seed}")
        torch.save(trained.model.state_dict(), folder / "model.pt")
        info = {"strategy": strategy, "seed": seed, "best_epoch": trained.best_epoch, "n_train": len(data),
                "n_added": len(data) - len(train), "images_per_second": trained.images_per_second,
                "n_outputs": len(data.label_columns), "in_channels": data.image_shape[-1],
                "backbone": cfg.classifier.backbone, "width": cfg.classifier.width,
                "label_columns": data.label_columns, "label_type": trained.model.label_type, "device": str(device),
                "generated_from": str(generated.path) if strategy == "generator" and generated else ""}
        (folder / "info.json").write_text(json.dumps(info, indent=2))
        (folder / "history.json").write_text(json.dumps(trained.history))
        if strategy == "supervised":  # the baseline doubles as the pseudo-labelling teacher
            pool = load_split(dataset, "unlabelled")
            np.save(folder / "pool_scores.npy", predict_proba(trained.model, pool.images, device)
                    if len(pool) else np.zeros((0, len(data.label_columns)), np.float32))

    return StoredItem(cached_folder(store_root(cfg), "classifiers", key, build), key)


def load_classifier(model: StoredItem, device: torch.device) -> AUClassifier:
    info = json.loads((model.path / "info.json").read_text())
    net = AUClassifier(info["n_outputs"], info["in_channels"], info["backbone"], info["width"],
                       label_type=info["label_type"])
    net.load_state_dict(torch.load(model.path / "model.pt", map_location=device, weights_only=True))
    return net.to(device)


def evaluate(cfg: ExperimentConfig, dataset: StoredItem, model: StoredItem) -> Evaluation:
    """Score the held-out test set: the per-output table, flat metrics and the error matrix
    (AU false positives, or the emotion confusion; none for continuous labels)."""
    device = resolve_device(cfg.device)
    test = load_split(dataset, "test")
    net = load_classifier(model, device)
    scores = predict_proba(net, test.images, device)
    threshold = cfg.classifier.threshold
    table, flat = evaluate_predictions(net.label_type, test.labels, scores, test.label_columns, threshold)
    info = json.loads((model.path / "info.json").read_text())
    history = json.loads((model.path / "history.json").read_text())
    return Evaluation(info["strategy"], info["seed"], net.label_type, table, flat, net,
                      error_matrix(net.label_type, test.labels, scores, threshold), history, info)


def example_input(dataset: StoredItem, n: int = 2) -> np.ndarray:
    """A few test images as the classifier sees them (float32 NCHW in [-1, 1]): a signature example."""
    images = imageset.load(dataset.path / "test", mmap=True).images[:n]
    return (np.transpose(images, (0, 3, 1, 2)).astype(np.float32) / 127.5 - 1.0)
