"""Train the semi-supervised GAN, whose discriminator is the semi_supervised_gan strategy's classifier.

The discriminator learns the labels from the labelled training rows (the label type's supervised
loss, ``classifier.loss``) and real from fake on unlabelled pool images against a generator's
images; the features the real/fake task shapes are the ones its label head reads. One epoch is one
pass over the labelled rows in batches of ``classifier.batch_size``; each step draws as many pool
images and generates as many fakes, updates the discriminator on the three, then the generator
(non-saturating loss). Early stopping, the best epoch's weights, the validation record and the
never-learnt check are the standard classifier's (``train_classifier.fit_with_early_stopping``),
so the two are stopped and judged by the same rule.

Every discriminator pass sees the labelled, unlabelled and generated images as one batch, so its
batch-norm statistics, and the running ones it is tested with, always come from that same mix.

Reproducibility: the initial weights are drawn from the seed while the global RNGs are held
(``device.seeded``); every later draw (batch order, pool images, noise) comes from the loop's own
``torch.Generator``, so tasks on other threads neither change its numbers nor have theirs changed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ausynth.configs.schema import ClassifierConfig
from ausynth.configs.semi_supervised_gan import SemiSupervisedGANConfig
from ausynth.models.ssgan import NoiseGenerator, SemiSupervisedDiscriminator
from ausynth.tasks import label_types
from ausynth.tasks.device import seeded
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.train_classifier import (EpochCallback, TrainedClassifier, check_columns, fit_with_early_stopping,
                                            scale, to_tensor, with_noise)


def adversarial_losses(source: torch.Tensor, n_labelled: int, n_unlabelled: int,
                       smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The real/fake head's BCE on a batch laid out [labelled, unlabelled, generated]: unlabelled images
    against ``smoothing`` (one-sided label smoothing: 'real' at 0.9, not 1), generated ones against 0.
    Labelled images teach the label head only."""
    real = source[n_labelled:n_labelled + n_unlabelled]
    fake = source[n_labelled + n_unlabelled:]
    return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, smoothing)),
            F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def generator_loss(fake_source: torch.Tensor) -> torch.Tensor:
    """Non-saturating: raise the discriminator's log-probability that the fakes are real."""
    return F.binary_cross_entropy_with_logits(fake_source, torch.ones_like(fake_source))


class SemiSupervisedGAN:
    """Both networks, their optimisers and the training data; ``epoch`` is one pass over the labelled rows."""

    def __init__(self, train: ImageSet, pool: ImageSet, classifier: ClassifierConfig, cfg: SemiSupervisedGANConfig,
                 seed: int, device: torch.device) -> None:
        if not len(pool):
            raise ValueError("the semi-supervised GAN needs unlabelled images to show its discriminator as real")
        kind = label_types.of(train)
        with seeded(seed):
            self.D = SemiSupervisedDiscriminator(len(train.label_columns), train.image_shape[-1], classifier.backbone,
                                                 classifier.width, kind.name, classifier.input_size).to(device)
            self.G = NoiseGenerator(cfg.noise_dim, train.image_shape, cfg.base_channels).to(device)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.supervised = kind.loss(classifier.loss)
        self.cfg, self.batch_size, self.input_noise = cfg, classifier.batch_size, classifier.input_noise
        self.rng = torch.Generator().manual_seed(seed)
        self.images, self.targets = to_tensor(train.images, device), torch.from_numpy(train.labels).to(device)
        self.pool = to_tensor(pool.images, device)

    def epoch(self) -> dict[str, float]:
        """Train one pass; the record's means per labelled image: ``train_loss`` (supervised), ``train_d_real``,
        ``train_d_fake`` and ``train_g_loss``."""
        self.D.train()
        self.G.train()
        order = torch.randperm(len(self.images), generator=self.rng).to(self.images.device)
        totals = dict.fromkeys(("train_loss", "train_d_real", "train_d_fake", "train_g_loss"), 0.0)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            unlabelled = torch.randint(len(self.pool), (len(index),), generator=self.rng).to(self.pool.device)
            noise = torch.randn(len(index), self.cfg.noise_dim, generator=self.rng).to(self.images.device)
            losses = self.step(scale(self.images[index]), self.targets[index], scale(self.pool[unlabelled]), noise)
            for key, value in losses.items():
                totals[key] += value * len(index)
        return {key: total / len(order) for key, total in totals.items()}

    def step(self, labelled: torch.Tensor, targets: torch.Tensor, unlabelled: torch.Tensor,
             noise: torch.Tensor) -> dict[str, float]:
        """One discriminator update, then one generator update against the updated discriminator. The
        classifier's ``input_noise`` goes onto everything the discriminator sees, real and fake alike, so
        that it cannot tell them apart by their noise."""
        n, m = len(labelled), len(unlabelled)
        fake = self.G(noise)
        seen = with_noise(torch.cat([labelled, unlabelled, fake.detach()]), self.input_noise, self.rng)
        source, labels = self.D(seen)
        supervised = self.supervised(labels[:n], targets)
        real_loss, fake_loss = adversarial_losses(source, n, m, self.cfg.label_smoothing)
        self._update(supervised + self.cfg.adversarial_weight * (real_loss + fake_loss), self.opt_d)
        self.D.requires_grad_(False)  # gradients pass through it to the generator; its weights stay
        source, _ = self.D(with_noise(torch.cat([labelled, unlabelled, fake]), self.input_noise, self.rng))
        g_loss = generator_loss(source[n + m:])
        self._update(g_loss, self.opt_g)
        self.D.requires_grad_(True)
        return {"train_loss": supervised.item(), "train_d_real": real_loss.item(), "train_d_fake": fake_loss.item(),
                "train_g_loss": g_loss.item()}

    @staticmethod
    def _update(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def train_semi_supervised_gan(train: ImageSet, val: ImageSet, pool: ImageSet, classifier: ClassifierConfig,
                              cfg: SemiSupervisedGANConfig, seed: int, device: torch.device,
                              on_epoch: EpochCallback | None = None, desc: str = "semi_supervised_gan"
                              ) -> TrainedClassifier:
    """Train on the labelled ``train`` rows and the unlabelled ``pool``; the returned model is the
    discriminator's classifier (backbone and label head) at its best epoch."""
    check_columns(train, val)
    gan = SemiSupervisedGAN(train, pool, classifier, cfg, seed, device)
    real_per_epoch = 2 * len(train)  # each labelled image, and as many pool images
    return fit_with_early_stopping(gan.D.classifier, gan.epoch, real_per_epoch, val, classifier, gan.supervised,
                                   on_epoch, desc)
