"""Checks that need the built dataset but no training: they fail a comparison in seconds, not hours.

A config is validated when it is loaded; what only the data can tell (is there an unlabelled
pool, a neutral face to start from, does the given generator checkpoint fit these images) is
checked here, right after the dataset stage and before the first classifier trains.
"""

from __future__ import annotations

import numpy as np

from ausynth.configs.schema import ExperimentConfig
from ausynth.tasks import datasets, label_types
from ausynth.tasks.errors import ConfigError, DataError
from ausynth.tasks.generator_kinds import ISOLATED_LABEL_TYPES, Architecture, generator_kind
from ausynth.tasks.generator_stage import check_checkpoint
from ausynth.tasks.store import StoredItem
from ausynth.tasks.strategies import strategy


def check_inputs(cfg: ExperimentConfig, dataset: StoredItem) -> None:
    chosen = [strategy(name) for name in cfg.strategies]
    pool = datasets.load_set(dataset, "unlabelled", mmap=True)
    needing_pool = [s.name for s in chosen if s.needs_pool]
    if needing_pool and not len(pool):
        raise DataError(f"strategies {needing_pool} need unlabelled images, but the dataset has none: add an "
                        "unlabelled pool (dataset.unlabelled for the toy set; an 'unlabelled:' source, or rows "
                        "without labels, for faces) or drop those strategies")
    if any(s.needs_generated for s in chosen):
        labelled = datasets.load_set(dataset, "labelled", mmap=True)
        arch = Architecture.of(cfg.generator, labelled)  # the kind takes these labels (else a ConfigError)
        if arch.label_type not in ISOLATED_LABEL_TYPES:
            raise ConfigError(f"strategies: 'generator' adds images that each show one label alone, but "
                              f"{arch.label_type!r} labels have none to show alone: drop it from strategies (a "
                              f"generator.kind {cfg.generator.kind!r} can still be trained on them: ausynth "
                              "train-generator)")
        if cfg.generator.checkpoint is not None:
            check_checkpoint(cfg, dataset)
        if generator_kind(cfg.generator.kind).needs_source:
            _check_neutral_sources(dataset, pool_size=len(pool))


def _check_neutral_sources(dataset: StoredItem, pool_size: int) -> None:
    """Single-AU images start from neutral faces: a labelled neutral set, labelled images with every AU
    absent, or pool images the teacher finds neutral."""
    labelled = datasets.load_set(dataset, "labelled", mmap=True)
    kind = label_types.of(labelled)
    if not kind.per_au or pool_size or datasets.has_neutral_set(dataset):
        return
    neutral = ~kind.present(labelled.labels).any(axis=1)
    if not np.any(neutral):
        raise DataError(f"the generator strategy starts from neutral faces, but none of the {len(labelled)} labelled "
                        "images has all AUs absent, and there is no neutral set (dataset.neutral) nor an unlabelled "
                        "pool to find one in: add neutral images (labelled with all AUs 0, a dataset.neutral set, or "
                        "an unlabelled pool) or drop the generator strategy")
