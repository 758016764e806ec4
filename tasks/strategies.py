"""The ways to enlarge a training set that the comparison sets against each other.

Every strategy but the supervised baseline adds the same number of images, so differences in
the downstream classifier come from what was added, not how much.
"""

from __future__ import annotations

import logging

import numpy as np

from ausynth.configs.schema import PseudoLabelConfig
from ausynth.tasks.imageset import ImageSet, concat
from ausynth.tasks.metrics import predicted_labels

log = logging.getLogger("ausynth")


def train_val(labelled: ImageSet) -> tuple[ImageSet, ImageSet]:
    """The labelled set's training and validation rows (its ``split`` column)."""
    split = labelled.frame["split"].to_numpy()
    return labelled.subset(np.flatnonzero(split == "train")), labelled.subset(np.flatnonzero(split == "val"))


def upsample(train: ImageSet, size: int, seed: int) -> ImageSet:
    """``size`` images drawn with replacement from the labelled training rows."""
    rng = np.random.default_rng(seed)
    extra = train.subset(rng.integers(0, len(train), size=size))
    extra.frame["origin"] = "upsampled"
    return extra


def sample(pool: ImageSet, size: int, seed: int) -> ImageSet:
    """``size`` rows of ``pool`` without replacement (all of them, shuffled, when it is smaller)."""
    if len(pool) < size:
        log.warning("only %d images to add where augment.size is %d", len(pool), size)
    rng = np.random.default_rng(seed)
    return pool.subset(rng.permutation(len(pool))[:size])


def confidence(scores: np.ndarray, label_type: str = "au_presence") -> np.ndarray:
    """Per image, how sure the classifier is: the top class probability for emotions; for AUs the
    least confident AU's max(p, 1 - p), since one unsure AU makes the image unsure."""
    if label_type == "emotion":
        return scores.max(axis=1)
    return np.maximum(scores, 1.0 - scores).min(axis=1)


def pseudo_label(pool: ImageSet, scores: np.ndarray, size: int, cfg: PseudoLabelConfig, threshold: float,
                 seed: int) -> ImageSet:
    """``size`` pool images labelled by a classifier's ``scores`` (hard: thresholded; soft: the scores).

    With a confidence filter, only images whose every AU is at least that sure are eligible;
    too few eligible images is an error rather than a silently smaller set.
    """
    label_type = pool.meta.get("label_type", "au_presence")
    eligible = np.arange(len(pool))
    if cfg.confidence is not None:
        eligible = np.flatnonzero(confidence(scores, label_type) >= cfg.confidence)
        log.info("pseudo-labels: %d of %d pool images pass confidence %.2f", len(eligible), len(pool), cfg.confidence)
        if len(eligible) < size:
            raise ValueError(
                f"only {len(eligible)} unlabelled images pass pseudo_label.confidence={cfg.confidence}, "
                f"but augment.size is {size}: lower the confidence or the augment size"
            )
    if len(eligible) < size:
        log.warning("the unlabelled pool has %d images where augment.size is %d: adding them all", len(eligible), size)
    chosen = np.random.default_rng(seed).permutation(eligible)[:size]
    labels = scores[chosen] if cfg.mode == "soft" else predicted_labels(label_type, scores[chosen], threshold)
    return pool.subset(chosen).with_labels(labels, origin="pseudo")


def training_set(train: ImageSet, extra: ImageSet | None) -> ImageSet:
    """The labelled training rows plus a strategy's added images (none for the baseline)."""
    return train if extra is None else concat([train, extra])
