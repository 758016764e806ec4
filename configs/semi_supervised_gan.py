"""The semi_supervised_gan strategy's section: the GAN around its discriminator-classifier.

The discriminator is the comparison's classifier (``classifier:`` backbone, width, supervised
loss, batch size, epochs and early stopping) with one more head, real or fake; so it differs from
the supervised baseline only by what the GAN adds: the unlabelled pool (``augment.size`` images,
as many as every other strategy adds) shown as real, and a generator's images shown as fake.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveInt

from ausynth.configs.section import Section


class SemiSupervisedGANConfig(Section):
    # The real/fake head's target for real (unlabelled) images; fakes stay at 0. One-sided label
    # smoothing (Salimans et al. 2016): a discriminator never sure of 'real' gives the generator
    # gradients without rewarding it for the fakes it already gets past.
    label_smoothing: Annotated[float, Field(gt=0, le=1)] = 0.9
    # The real/fake loss against the supervised loss in the discriminator's objective.
    adversarial_weight: Annotated[float, Field(ge=0)] = 1.0
    noise_dim: PositiveInt = 64
    # The DCGAN generator's width: 8x this many channels at 1/8 of the image side, halved at each
    # of its three upsamplings. 8 keeps a 96x96 epoch a few seconds on one CPU thread.
    base_channels: PositiveInt = 8
    lr: Annotated[float, Field(gt=0)] = 1e-3  # Adam, both networks
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.5, 0.999)
