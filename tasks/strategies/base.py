"""What every strategy is: a name, what it needs built first, the images it adds, its cache key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ausynth.tasks.errors import DataError
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.store import StoredItem

if TYPE_CHECKING:
    from ausynth.configs.schema import ExperimentConfig


@dataclass(frozen=True)
class Inputs:
    """What the comparison has built that a strategy may draw on."""

    dataset: StoredItem
    pool_scores: StoredItem | None = None  # the teacher's scores of the unlabelled pool
    generated: StoredItem | None = None  # the generator's checked single-label images


class Strategy:
    """A way to enlarge the labelled training rows.

    Subclasses set ``name`` and what they need (``needs_pool``: an unlabelled pool must exist;
    ``needs_pool_scores``: the teacher's pool scores; ``needs_generated``: generated images), and
    implement ``added``; ``key_parts`` must name every input ``added`` reads, because it is what
    the trained classifier's store entry is keyed on.
    """

    name: ClassVar[str]
    needs_pool: ClassVar[bool] = False
    needs_pool_scores: ClassVar[bool] = False
    needs_generated: ClassVar[bool] = False

    def added(self, cfg: ExperimentConfig, inputs: Inputs, train: ImageSet, seed: int) -> ImageSet | None:
        """The images this strategy adds to ``train`` (the labelled training rows); None adds nothing."""
        raise NotImplementedError

    def key_parts(self, cfg: ExperimentConfig, inputs: Inputs) -> Any:
        """Everything besides the dataset, classifier settings and seed that decides ``added``."""
        return cfg.augment


def sample(images: ImageSet, size: int, seed: int, what: str) -> ImageSet:
    """Exactly ``size`` rows of ``images``, without replacement; fewer is an error, never a silent shortfall."""
    if len(images) < size:
        raise DataError(f"only {len(images)} {what} to add where augment.size is {size}: lower augment.size "
                        f"or provide more")
    return images.subset(np.random.default_rng(seed).permutation(len(images))[:size])
