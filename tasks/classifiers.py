"""The classifier stages: train one per (strategy, seed), score the pool with the teacher, test.

Each trained classifier is a store entry keyed by the dataset, the strategy's own key parts
(what it adds), the classifier settings and the seed; so a strategy's model is trained once
however often a comparison is re-run, and a changed input trains a new one beside the old.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ausynth.configs.schema import ExperimentConfig
from ausynth.models.au_classifier import AUClassifier
from ausynth.tasks import datasets, label_types
from ausynth.tasks.device import resolve_device
from ausynth.tasks.errors import StoreError
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.pseudo_labels import NEUTRAL_SCORES, SCORES
from ausynth.tasks.store import StoredItem, cached_folder, stable_hash
from ausynth.tasks.strategies import Inputs, Strategy
from ausynth.tasks.train_classifier import predict_proba

log = logging.getLogger("ausynth")

WEIGHTS, INFO, HISTORY = "model.pt", "info.json", "history.json"
# What a classifier must carry to score new images (``ausynth predict``): its info.json keys, and the
# metadata of its MLflow model.
PREDICT_KEYS = ("label_columns", "label_type", "input")


@dataclass
class Evaluation:
    """One (strategy, seed) classifier on the test set."""

    strategy: str
    seed: int
    label_type: str
    per_output: pd.DataFrame  # a row per label column: the label type's per-output metrics
    metrics: dict[str, float]  # flat: per-output and mean figures
    model: AUClassifier
    error_matrix: np.ndarray | None
    history: list[dict[str, float]]
    info: dict


def classifier_key(cfg: ExperimentConfig, strategy: Strategy, seed: int, inputs: Inputs) -> str:
    return stable_hash("classifier", inputs.dataset.key, strategy.name, seed, cfg.classifier,
                       strategy.key_parts(cfg, inputs), datasets.FORMAT_VERSION)


def input_record(train: ImageSet, threshold: float) -> dict:
    """What a new image must become before this classifier scores it: the crop its training images were
    (size, channels, the labelled source's detection backend and multi-face policy; toy grids and ready
    crops: ``none``, a centre square resized), and the score threshold for 'present'."""
    height, width, channels = train.image_shape
    made = train.meta.get("detection", {}).get("source", {"backend": "none", "multi_face": "largest"})
    detection = {"backend": made["backend"], "multi_face": made["multi_face"], "size": height, "channels": channels}
    return {"image_shape": [height, width, channels], "detection": detection, "threshold": threshold}


def fit_classifier(cfg: ExperimentConfig, strategy: Strategy, seed: int, inputs: Inputs) -> StoredItem:
    """Train (or reuse) the classifier of one (strategy, seed) and store its weights, info and history."""
    key = classifier_key(cfg, strategy, seed, inputs)

    def build(folder: Path) -> None:
        train, val = datasets.train_val(datasets.load_set(inputs.dataset, "labelled"))
        device = resolve_device(cfg.device)
        start_ms = time.time_ns() // 1_000_000
        trained, n_added = strategy.fit(cfg, inputs, train, val, seed, device)
        training_ms = [start_ms, time.time_ns() // 1_000_000]  # the child run spans these
        torch.save(trained.model.state_dict(), folder / WEIGHTS)
        info = {"strategy": strategy.name, "seed": seed, "best_epoch": trained.best_epoch,
                "epochs": len(trained.history), "n_train": len(train) + n_added, "n_added": n_added,
                "images_per_second": trained.images_per_second, "n_outputs": len(train.label_columns),
                "in_channels": train.image_shape[-1], "backbone": cfg.classifier.backbone,
                "width": cfg.classifier.width, "input_size": cfg.classifier.input_size,
                "label_columns": train.label_columns,
                "label_type": trained.model.label_type, "device": str(device),
                "never_learnt": trained.never_learnt,
                "never_learnt_reason": trained.never_learnt_reason, "stopped_early": trained.stopped_early,
                "monitor": trained.monitor, "input": input_record(train, cfg.classifier.threshold),
                "training_ms": training_ms}
        (folder / INFO).write_text(json.dumps(info, indent=2))
        (folder / HISTORY).write_text(json.dumps(trained.history))

    return StoredItem(cached_folder(datasets.store_root(cfg), "classifiers", key, build), key)


def read_info(model: StoredItem) -> dict:
    return json.loads((model.path / INFO).read_text())


def load_classifier(model: StoredItem, device: torch.device) -> AUClassifier:
    info = read_info(model)
    net = AUClassifier(info["n_outputs"], info["in_channels"], info["backbone"], info["width"],
                       label_type=info["label_type"], input_size=info.get("input_size"))
    try:
        net.load_state_dict(torch.load(model.path / WEIGHTS, map_location=device, weights_only=True))
    except (RuntimeError, OSError, EOFError) as err:
        raise StoreError(f"store entry {model.path} holds unreadable weights ({type(err).__name__}): delete the "
                         f"folder and run again to retrain it") from None
    return net.to(device)


def score_pool(cfg: ExperimentConfig, dataset: StoredItem, teacher: StoredItem) -> StoredItem:
    """The teacher's predictions for every unlabelled pool image (N, K), computed once per teacher; and for
    every image of a labelled neutral set, which are neutral by label but whose predicted profile the
    generated images' ``sources.csv`` reports."""
    def build(folder: Path) -> None:
        device = resolve_device(cfg.device)
        model = load_classifier(teacher, device)
        scored = {"unlabelled": SCORES}
        if datasets.has_neutral_set(dataset):
            scored[datasets.NEUTRAL_SET] = NEUTRAL_SCORES
        for name, file in scored.items():
            images = datasets.load_set(dataset, name).images
            np.save(folder / file, predict_proba(model, images, device).astype(np.float32))

    key = stable_hash("pool_scores", teacher.key)
    return StoredItem(cached_folder(datasets.store_root(cfg), "pool_scores", key, build), key)


def evaluate(cfg: ExperimentConfig, dataset: StoredItem, model: StoredItem) -> Evaluation:
    """Score the held-out test set: the per-output table, flat metrics and the label type's error matrix."""
    device = resolve_device(cfg.device)
    test = datasets.load_set(dataset, "test")
    net = load_classifier(model, device)
    kind = label_types.label_type(net.label_type)
    scores = predict_proba(net, test.images, device)
    threshold = cfg.classifier.threshold
    train, _ = datasets.train_val(datasets.load_set(dataset, "labelled", mmap=True))
    table, flat = kind.evaluate(test.labels, scores, test.label_columns, threshold, train.labels)
    info = {**read_info(model), "input": input_record(train, threshold)}  # entries older than the record lack it
    history = json.loads((model.path / HISTORY).read_text())
    return Evaluation(info["strategy"], info["seed"], kind.name, table, flat, net,
                      kind.error_matrix(test.labels, scores, threshold), history, info)
