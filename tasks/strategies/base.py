"""What every strategy is: a name, what it needs built first, the images it adds, how its classifier is
trained, its cache key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ausynth.tasks.errors import DataError
from ausynth.tasks.imageset import ImageSet, concat
from ausynth.tasks.store import StoredItem
from ausynth.tasks.train_classifier import TrainedClassifier, train_classifier

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
    implement ``added``; ``key_parts`` must name every input ``added`` (and ``fit``) reads, because
    it is what the trained classifier's store entry is keyed on. ``fit`` trains the standard
    classifier on the enlarged set; a strategy whose classifier is trained another way (the
    semi-supervised GAN's discriminator) overrides it, and is stored and evaluated like the rest.
    """

    name: ClassVar[str]
    needs_pool: ClassVar[bool] = False
    needs_pool_scores: ClassVar[bool] = False
    needs_generated: ClassVar[bool] = False

    def added(self, cfg: ExperimentConfig, inputs: Inputs, train: ImageSet, seed: int) -> ImageSet | None:
        """The images this strategy adds to ``train`` (the labelled training rows); None adds nothing."""
        raise NotImplementedError

    def fit(self, cfg: ExperimentConfig, inputs: Inputs, train: ImageSet, val: ImageSet, seed: int,
            device: torch.device) -> tuple[TrainedClassifier, int]:
        """This strategy's trained classifier, and how many images it added to ``train``."""
        extra = self.added(cfg, inputs, train, seed)
        data = train if extra is None else concat([train, extra])
        trained = train_classifier(data, val, cfg.classifier, seed, device, desc=f"{self.name}/seed{seed}")
        return trained, len(data) - len(train)

    def key_parts(self, cfg: ExperimentConfig, inputs: Inputs) -> Any:
        """Everything besides the dataset, classifier settings and seed that decides ``added``."""
        return cfg.augment


def sample(images: ImageSet, size: int, seed: int, what: str) -> ImageSet:
    """Exactly ``size`` rows of ``images``, without replacement; fewer is an error, never a silent shortfall."""
    if len(images) < size:
        raise DataError(f"only {len(images)} {what} to add where augment.size is {size}: lower augment.size "
                        f"or provide more")
    return images.subset(np.random.default_rng(seed).permutation(len(images))[:size])
