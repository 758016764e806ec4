"""The semi-supervised GAN: its discriminator, which also learns the labels, is the classifier.

Instead of labelling pool images (pseudo_label) or making labelled ones (generator), it shows
``augment.size`` unlabelled pool images, as many as the others add, to a discriminator as real
against a small generator's fakes (``tasks/ssgan_training.py``); what the real/fake task teaches
its features is what it adds. It trains on the same labelled rows, is stopped by the same rule
and tested on the same set as every other strategy's classifier.
"""

from __future__ import annotations

from ausynth.tasks import datasets
from ausynth.tasks.ssgan_training import train_semi_supervised_gan
from ausynth.tasks.strategies.base import Strategy, sample


class SemiSupervisedGAN(Strategy):
    name = "semi_supervised_gan"
    needs_pool = True

    def added(self, cfg, inputs, train, seed):
        """The unlabelled images it trains on: ``augment.size`` pool images, drawn by the seed."""
        return sample(datasets.load_set(inputs.dataset, "unlabelled"), cfg.augment.size, seed, "unlabelled pool images")

    def fit(self, cfg, inputs, train, val, seed, device):
        pool = self.added(cfg, inputs, train, seed)
        trained = train_semi_supervised_gan(train, val, pool, cfg.classifier, cfg.semi_supervised_gan, seed, device,
                                            desc=f"{self.name}/seed{seed}")
        return trained, len(pool)

    def key_parts(self, cfg, inputs):
        return cfg.augment, cfg.semi_supervised_gan
