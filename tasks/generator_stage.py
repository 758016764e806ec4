"""The generator's part of the comparison: an oracle, the GAN, and the single-label images.

Like every stage, each output is a store entry named by what determines it. Generator training
is the one long stage, so it works in a ``<key>.partial`` folder that keeps its checkpoints: a
killed run resumes there, and the folder takes its final name only when training ends. A file
lock on the entry makes a second run of the same config wait for the first and reuse its result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ausynth.configs.schema import ClassifierConfig, ExperimentConfig, ToyDatasetConfig
from ausynth.tasks import datasets, imageset
from ausynth.tasks.checkpoint import load_generator, read_checkpoint
from ausynth.tasks.classifiers import fit_classifier, load_classifier
from ausynth.tasks.device import resolve_device
from ausynth.tasks.gan_training import CHECKPOINT, RESUME_FREE, LogCallback, train_gan
from ausynth.tasks.au_regions import label_masks, region_change, target_spread
from ausynth.tasks.generate import (example_grid, generate_isolated, generate_verified, oracle_verdict,
                                    quality_table, sources_showing_a_label, total_images)
from ausynth.tasks.generator_kinds import Architecture, generator_kind
from ausynth.tasks.imageset import ImageSet, concat
from ausynth.tasks.pseudo_labels import NEUTRAL_SCORES, load_scores, pseudo_labelled
from ausynth.tasks.store import StoredItem, cached_folder, damage, locked, seal, set_aside, stable_hash
from ausynth.tasks.strategies import BASELINE, Inputs

ORACLE_SEED = 7919  # the oracle is a separately trained classifier, never one under evaluation


def fit_oracle(cfg: ExperimentConfig, dataset: StoredItem) -> StoredItem:
    """The classifier that judges whether a generated image shows its target AU alone.

    On faces it is one more baseline classifier (its own seed). On the toy set, where images can
    be drawn at will, it is trained on images with AU2 and AU3 independent, with the library's
    default training profile: an instrument trained on the correlated data inherits the very
    confusion under study and would fail real AU2-only images as often as generated ones.
    """
    if not isinstance(cfg.dataset, ToyDatasetConfig):
        return fit_classifier(cfg, BASELINE, ORACLE_SEED, Inputs(dataset))
    profile = ClassifierConfig(backbone=cfg.classifier.backbone, width=cfg.classifier.width,
                               input_size=cfg.classifier.input_size, threshold=cfg.classifier.threshold)
    independent = datasets.prepare_independent_toy(cfg, ORACLE_SEED)
    return fit_classifier(cfg.model_copy(update={"classifier": profile}), BASELINE, ORACLE_SEED, Inputs(independent))


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
        if final.is_dir() and (reason := damage(final)) is not None:
            set_aside(final, reason)
        if not final.is_dir():
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


def _neutral_source(cfg: ExperimentConfig, dataset: StoredItem) -> str:
    """``generator.neutral_source``, with 'auto' taking the dataset's labelled neutral set where it has one
    (and the generator edits sources: a kind that draws from noise has none)."""
    chosen = cfg.generator.neutral_source
    if chosen == "auto" and generator_kind(cfg.generator.kind).needs_source and datasets.has_neutral_set(dataset):
        return "neutral_set"
    return chosen


def _neutral_set_pool(dataset: StoredItem, pool_scores: StoredItem) -> tuple[ImageSet, np.ndarray]:
    """The labelled neutral set, and the teacher's scores for it (scored with the pool): neutral by label,
    but ``sources.csv`` shows what the teacher sees in them."""
    return datasets.load_set(dataset, datasets.NEUTRAL_SET), load_scores(pool_scores, NEUTRAL_SCORES)


def make_isolated(cfg: ExperimentConfig, dataset: StoredItem, generator: StoredItem, pool_scores: StoredItem,
                  oracle: StoredItem) -> StoredItem:
    """Single-label images with the oracle's verdict: ``images/`` (exactly the count the comparison adds),
    ``quality.csv`` (per label, generated beside real pass rates), ``sources.csv`` (the sources' label
    or predicted profile; the teacher's for a labelled neutral set), ``examples.png`` and
    ``summary.json``. A kind that draws from noise (cgan) has no sources: no ``sources.csv`` and no
    change from a source inside and outside the label's region."""
    settings = cfg.generator.model_dump(include={"intensity", "neutral_source", "neutral_threshold", "images_per_au",
                                                 "drop_failed", "max_rounds", "on_shortfall"})
    key = stable_hash("generated", generator.key, pool_scores.key, oracle.key, settings, cfg.augment.size,
                      cfg.classifier.threshold, datasets.FORMAT_VERSION)

    def build(folder: Path) -> None:
        device = resolve_device(cfg.device)
        gen_cfg = cfg.generator.model_copy(update={"neutral_source": _neutral_source(cfg, dataset)})
        if gen_cfg.neutral_source == "neutral_set":
            pool, scores = _neutral_set_pool(dataset, pool_scores)
        else:
            pool, scores = _source_pool(dataset, pool_scores)
        trained = load_generator(generator.path, device)
        judge = load_classifier(oracle, device)
        count = total_images(gen_cfg, cfg.augment.size, len(pool.label_columns))
        if gen_cfg.drop_failed:
            kept, tried = generate_verified(trained, pool, gen_cfg, count, device, scores, judge,
                                            cfg.classifier.threshold)
        else:
            kept = tried = generate_isolated(trained, pool, gen_cfg, count, device, scores)
            kept.frame["passed"] = oracle_verdict(kept, judge, device, cfg.classifier.threshold)
        real = datasets.load_set(dataset, "test")
        has_sources = generator_kind(trained.architecture.kind).needs_source
        table = quality_table(tried, judge, device, cfg.classifier.threshold, real)
        table["kept_images"] = kept.frame["target"].value_counts().reindex(table.index, fill_value=0)  # shift moves them
        if has_sources:
            region_kind = "toy" if isinstance(cfg.dataset, ToyDatasetConfig) else "faces"  # pools may lack meta
            masks = label_masks(region_kind, pool.label_columns, *pool.image_shape[:2])
            table = table.join(region_change(tried, pool, masks))
        summary = {"images": len(kept), "labels_with_images": int((table["kept_images"] > 0).sum()),
                   "tried": len(tried), "pass_rate": float(tried.frame["passed"].mean()),
                   "kept_passing": float(kept.frame["passed"].mean()),
                   "real_pass_rate": float(table["real_pass_rate"].mean()),
                   "relative_pass_rate_min": float(table["relative_pass_rate"].min()),
                   "share_target_shown": float(table["share_target_shown"].mean()),
                   "real_target_shown": float(table["real_target_shown"].mean()),
                   "relative_target_shown_min": float(table["relative_target_shown"].min()),
                   "share_other_shown": float(table["share_other_shown"].mean()),
                   **{name: float(table[name].mean()) for name in ("change_inside", "change_outside") if has_sources},
                   **({"sources_showing_a_label": sources_showing_a_label(tried, pool, judge, device,
                                                                         cfg.classifier.threshold)}
                      if has_sources else {}),
                   "diversity": float(table["diversity"].mean()), "diversity_min": float(table["diversity"].min()),
                   "target_spread": target_spread(tried),
                   "checkpoint": str(generator.path), "generator_step": trained.step}
        (folder / "images").mkdir()
        imageset.write(kept, folder / "images")
        table.to_csv(folder / "quality.csv")
        if has_sources:
            source_profile(kept, pool, scores).to_csv(folder / "sources.csv")
        example_grid(tried, pool if has_sources else None).savefig(folder / "examples.png", dpi=90)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))

    return StoredItem(cached_folder(datasets.store_root(cfg), "generated", key, build), key)


def source_profile(generated: ImageSet, pool: ImageSet, scores: np.ndarray) -> pd.DataFrame:
    """How neutral the sources really were: per label, the mean and max of their labels (labelled
    sources) or the teacher's predicted scores (pool sources)."""
    sources = np.unique(generated.frame["source_index"].to_numpy())
    values = np.where(np.isnan(pool.labels[sources]), scores[sources], pool.labels[sources])
    return pd.DataFrame({"mean": values.mean(axis=0), "max": values.max(axis=0)},
                        index=pd.Index(pool.label_columns, name="label")).assign(sources=len(sources))
