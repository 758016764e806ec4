"""The generator's part of the comparison: an oracle, the GAN, and the single-label images.

Like every stage, each output is a store entry named by what determines it. Generator training
is the one long stage, so it works in a ``<key>.partial`` folder that keeps its checkpoints: a
killed run resumes there, and the folder takes its final name only when training ends. A file
lock on the entry makes a second run of the same config wait for the first and reuse its result.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ausynth.configs.schema import ExperimentConfig, ToyDatasetConfig
from ausynth.tasks import datasets, imageset
from ausynth.tasks.checkpoint import load_generator, read_checkpoint
from ausynth.tasks.classifiers import fit_classifier, load_classifier
from ausynth.tasks.device import resolve_device
from ausynth.tasks.gan_training import CHECKPOINT, RESUME_FREE, LogCallback, train_gan
from ausynth.tasks.generate import (example_grid, generate_isolated, identity_distance, keep_passing,
                                    quality_check, total_images)
from ausynth.tasks.generator_kinds import Architecture
from ausynth.tasks.imageset import ImageSet, concat
from ausynth.tasks.pseudo_labels import load_scores, pseudo_labelled
from ausynth.tasks.store import StoredItem, cached_folder, locked, seal, stable_hash
from ausynth.tasks.strategies import BASELINE, Inputs
from ausynth.tasks.toy_data import CELL, GRID

ORACLE_SEED = 7919  # the oracle is a separately trained classifier, never one under evaluation
DROP_MARGIN = 1.5  # with drop_failed, make this many times the images needed, then keep those that pass


def fit_oracle(cfg: ExperimentConfig, dataset: StoredItem) -> StoredItem:
    return fit_classifier(cfg, BASELINE, ORACLE_SEED, Inputs(dataset))


def generator_training_set(cfg: ExperimentConfig, dataset: StoredItem, pool_scores: StoredItem) -> ImageSet:
    """Labelled training rows plus the unlabelled pool, pseudo-labelled as the pseudo-label strategy does."""
    train, _ = datasets.train_val(datasets.load_set(dataset, "labelled"))
    pool = datasets.load_set(dataset, "unlabelled")
    if not len(pool):
        return train
    return concat([train, pseudo_labelled(pool, load_scores(pool_scores), cfg.pseudo_label,
                                          cfg.classifier.threshold)])


def check_checkpoint(cfg: ExperimentConfig, dataset: StoredItem) -> None:
    """Refuse ``generator.checkpoint`` before any training when it does not fit the config and data."""
    labelled = datasets.load_set(dataset, "labelled", mmap=True)
    read_checkpoint(cfg.generator.checkpoint, Architecture.of(cfg.generator, labelled))


def fit_generator(cfg: ExperimentConfig, dataset: StoredItem, pool_scores: StoredItem,
                  on_log: LogCallback | None = None) -> StoredItem:
    """The trained generator's checkpoint file: ``generator.checkpoint`` exactly as named (checked against the
    config and data), else one trained (or resumed, or reused) in the store."""
    if cfg.generator.checkpoint is not None:
        check_checkpoint(cfg, dataset)
        path = cfg.generator.checkpoint.resolve()
        stat = path.stat()
        return StoredItem(path, stable_hash("checkpoint", str(path), stat.st_size, stat.st_mtime_ns))
    training = cfg.generator.model_dump(mode="json", exclude=RESUME_FREE)
    key = stable_hash("generator", dataset.key, pool_scores.key, cfg.pseudo_label, training, cfg.seeds[0],
                      datasets.FORMAT_VERSION)
    final = datasets.store_root(cfg) / "generators" / key
    with locked(final):
        if not (final / CHECKPOINT).is_file():
            work = final.with_name(f"{key}.partial")
            data = generator_training_set(cfg, dataset, pool_scores)
            train_gan(data, cfg.generator, cfg.seeds[0], resolve_device(cfg.device), work, on_log)
            seal(work)
            os.replace(work, final)
    return StoredItem(final / CHECKPOINT, key)


def _source_pool(dataset: StoredItem, pool_scores: StoredItem) -> tuple[ImageSet, np.ndarray]:
    """Where neutral faces are looked for (labelled training rows, then the unlabelled pool), and the
    teacher's scores for the pool rows (NaN for the labelled ones)."""
    train, _ = datasets.train_val(datasets.load_set(dataset, "labelled"))
    pool = datasets.load_set(dataset, "unlabelled")
    scores = np.concatenate([np.full(train.labels.shape, np.nan, np.float32), load_scores(pool_scores)])
    return concat([train, pool]), scores


def make_isolated(cfg: ExperimentConfig, dataset: StoredItem, generator: StoredItem, pool_scores: StoredItem,
                  oracle: StoredItem) -> StoredItem:
    """Single-label images, scored by the oracle, with the quality table, summary and an example grid."""
    settings = {k: getattr(cfg.generator, k) for k in ("intensity", "neutral_threshold", "images_per_au", "drop_failed")}
    key = stable_hash("generated", generator.key, pool_scores.key, oracle.key, settings, cfg.augment.size,
                      cfg.classifier.threshold, datasets.FORMAT_VERSION)

    def build(folder: Path) -> None:
        device = resolve_device(cfg.device)
        pool, scores = _source_pool(dataset, pool_scores)
        trained = load_generator(generator.path, device)
        count = total_images(cfg.generator, cfg.augment.size, len(pool.label_columns))
        if cfg.generator.drop_failed:
            count = math.ceil(count * DROP_MARGIN)
        generated = generate_isolated(trained, pool, cfg.generator, count, device, scores, seed=cfg.seeds[0])
        table, passed = quality_check(generated, load_classifier(oracle, device), device, cfg.classifier.threshold)
        generated.frame["passed"] = passed
        summary = {"images": len(generated), "pass_rate": float(passed.mean()),
                   "share_target_shown": float(table["share_target_shown"].mean()),
                   "share_other_shown": float(table["share_other_shown"].mean()),
                   "checkpoint": str(generator.path), "generator_step": trained.step}
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

    return StoredItem(cached_folder(datasets.store_root(cfg), "generated", key, build), key)
