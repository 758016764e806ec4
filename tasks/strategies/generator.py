"""Generated images: neutral faces translated by a conditional GAN so that one AU (or emotion) shows alone."""

from __future__ import annotations

from ausynth.tasks import imageset
from ausynth.tasks.strategies.base import Strategy, sample


class Generator(Strategy):
    name = "generator"
    needs_pool_scores = True  # the generator trains on labelled + pseudo-labelled images (none without a pool)
    needs_generated = True

    def added(self, cfg, inputs, train, seed):
        return sample(imageset.load(inputs.generated.path / "images"), cfg.augment.size, seed, "generated images")

    def key_parts(self, cfg, inputs):
        return cfg.augment, inputs.generated.key
