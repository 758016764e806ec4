"""The generator's part of the comparison: an oracle, the GAN, and the AU-isolated images.

Like every stage, each output is a store entry named by what determines it. Generator training
is the one long stage, so it works in a ``<key>.partial`` folder that keeps its checkpoints:
a killed run resumes there, and the folder takes its final name only when training ends.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ausynth.configs.schema import ExperimentConfig, ToyDatasetConfig
from ausynth.tasks import imageset, strategies
from ausynth.tasks.checkpoint import load_generator
from ausynth.tasks.device import resolve_device
from ausynth.tasks.generate import (example_grid, generate_isolated, identity_distance, keep_passing,
                                    quality_check, total_images)
from ausynth.tasks.imageset import ImageSet, concat
from ausynth.tasks.metrics import predicted_labels
from ausynth.tasks.pipeline import FORMAT_VERSION, StoredItem, fit_classifier, load_classifier, load_split, store_root
from ausynth.tasks.store import cached_folder, stable_hash
from ausynth.tasks.toy_data import CELL, GRID
from ausynth.tasks.train_generator import CHECKPOINT, RESUME_FREE, LogCallback, train_generator

ORACLE_SEED = 7919  # the oracle is a separately trained classifier, never one under evaluation
DROP_MARGIN = 1.5  # with drop_failed, make this many times the images needed, then keep those that pass


def fit_oracle(cfg: ExperimentConfig, dataset: StoredItem) -> StoredItem:
    return fit_classifier(cfg, dataset, "supervised", ORACLE_SEED)


def generator_training_set(cfg: ExperimentConfig, dataset: StoredItem, teacher: StoredItem) -> ImageSet:
    """Labelled training rows plus the whole unlabelled pool, labelled by the teacher."""
    train, _ = strategies.train_val(load_split(dataset, "labelled"))
    pool = load_split(dataset, "unlabelled")
    if not len(pool):
        return train
    scores = np.load(teacher.path / "pool_scores.npy")
    label_type = pool.meta.get("label_type", "au_presence")
    labels = scores if cfg.pseudo_label.mode == "soft" else predicted_labels(label_type, scores,
                                                                             cfg.classifier.threshold)
    return concat([train, pool.with_labels(labels, origin="pseudo")])


def _checkpoint_item(path: Path) -> StoredItem:
    stat = path.stat()
    return StoredItem(path.parent, stable_hash("checkpoint", str(path.resolve()), stat.st_size, stat.st_mtime_ns))


def fit_generator(cfg: ExperimentConfig, dataset: StoredItem, teacher: StoredItem,
                  on_log: LogCallback | None = None) -> StoredItem:
    """The configured checkpoint, else a generator trained (or resumed, or reused) in the store."""
    if cfg.generator.checkpoint is not None:
        return _checkpoint_item(cfg.generator.checkpoint)
    training = cfg.generator.model_dump(mode="json", exclude=RESUME_FREE)
    key = stable_hash("generator", dataset.key, teacher.key, cfg.pseudo_label, training, cfg.seeds[0], FORMAT_VERSION)
    final = store_root(cfg) / "generators" / key
    if not (final / CHECKPOINT).is_file():
        work = final.with_name(f"{key}.partial")
        data = generator_training_set(cfg, dataset, teacher)
        train_generator(data, cfg.generator, cfg.seeds[0], resolve_device(cfg.device), work, on_log)
        os.replace(work, final)
    return StoredItem(final, key)


def _source_pool(dataset: StoredItem) -> ImageSet:
    """Where neutral faces are looked for: labelled training rows and the unlabelled pool."""
    train, _ = strategies.train_val(load_split(dataset, "labelled"))
    return concat([train, load_split(dataset, "unlabelled")])


def make_isolated(cfg: ExperimentConfig, dataset: StoredItem, generator: StoredItem, teacher: StoredItem,
                  oracle: StoredItem) -> StoredItem:
    """AU-isolated images, scored by the oracle, with the quality table, summary and an example grid."""
    settings = {k: getattr(cfg.generator, k) for k in ("intensity", "neutral_threshold", "images_per_au", "drop_failed")}
    key = stable_hash("generated", generator.key, teacher.key, oracle.key, settings, cfg.augment.size,
                      cfg.classifier.threshold, FORMAT_VERSION)

    def build(folder: Path) -> None:
        device = resolve_device(cfg.device)
        pool = _source_pool(dataset)
        trained = load_generator(generator.path / CHECKPOINT, device)
        count = total_images(cfg.generator, cfg.augment.size, len(pool.label_columns))
        if cfg.generator.drop_failed:
            count = math.ceil(count * DROP_MARGIN)
        generated = generate_isolated(trained, pool, cfg.generator, count, device, load_classifier(teacher, device),
                                      seed=cfg.seeds[0])
        table, passed = quality_check(generated, load_classifier(oracle, device), device, cfg.classifier.threshold)
        generated.frame["passed"] = passed
        summary = {"images": len(generated), "pass_rate": float(passed.mean()),
                   "share_target_shown": float(table["share_target_shown"].mean()),
                   "share_other_shown": float(table["share_other_shown"].mean()),
                   "checkpoint": str(generator.path / CHECKPOINT), "generator_step": trained.step}
        if isinstance(cfg.dataset, ToyDatasetConfig):
            generated.frame["identity_distance"] = identity_distance(generated, pool, GRID, CELL)
            summary["identity_distance"] = float(generated.frame["identity_distance"].mean())
        if cfg.generator.drop_failed:
            generated = keep_passing(generated, passed)
        (folder / "images").mkdir()
        imageset.write(generated, folder / "images")
        table.to_csv(folder / "quality.csv")
        example_grid(generated, pool, folder / "examples.png")
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))

    return StoredItem(cached_folder(store_root(cfg), "generated", key, build), key)
