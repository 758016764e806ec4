"""Pseudo-labels: the one way unlabelled images get labels, for every stage that needs them.

The teacher (the baseline classifier of the first seed) scores the unlabelled pool once; the
scores are a store entry of their own (``classifiers.score_pool``). The pseudo-label strategy samples from
``pseudo_labelled(...)``, and the generator trains on the labelled rows plus all of it, so both
see the same labels, filtered the same way.
"""

from __future__ import annotations

import logging

import numpy as np

from ausynth.configs.schema import PseudoLabelConfig
from ausynth.tasks import label_types
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.store import StoredItem

log = logging.getLogger("ausynth")

SCORES = "scores.npy"
NEUTRAL_SCORES = "neutral_scores.npy"  # the teacher's scores for a labelled neutral set, where there is one


def load_scores(item: StoredItem, name: str = SCORES) -> np.ndarray:
    return np.load(item.path / name)


def pseudo_labelled(pool: ImageSet, scores: np.ndarray, cfg: PseudoLabelConfig, threshold: float) -> ImageSet:
    """The pool images the teacher is sure enough of, labelled by its ``scores``.

    Hard labels threshold the scores (``label type.hard_labels``), soft labels keep them. With
    ``cfg.confidence``, only images whose every label is at least that sure are kept.
    """
    kind = label_types.of(pool)
    keep = np.arange(len(pool))
    if cfg.confidence is not None:
        keep = np.flatnonzero(kind.confidence(scores) >= cfg.confidence)
        log.info("pseudo-labels: %d of %d pool images pass confidence %.2f", len(keep), len(pool), cfg.confidence)
    chosen = scores[keep]
    labels = chosen if cfg.mode == "soft" else kind.hard_labels(chosen, threshold)
    return pool.subset(keep).with_labels(labels, origin="pseudo")
