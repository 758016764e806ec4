"""The loss terms of the generators (adversarial: WGAN-GP, BCE or hinge; conditional; L1 reconstruction).

Kept as plain functions of tensors so that the training loop composes them per generator kind
and tests can check each against a value known by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic: raise scores on real images, lower them on fakes."""
    return fake_scores.mean() - real_scores.mean()


def generator_adversarial_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def bce_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The original GAN (Goodfellow et al. 2014): cross-entropy of real (1) vs fake (0) on the scores as logits."""
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()


def bce_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Non-saturating: maximise log D(G(z)); minimising log(1 - D(G(z))) gives no gradient once D wins."""
    return F.softplus(-fake_scores).mean()


def hinge_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Hinge (Lim & Ye 2017; Miyato et al. 2018): only scores inside the margin (real < 1, fake > -1) are pushed."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


class Adversarial(NamedTuple):
    """One adversarial objective: the critic's loss, the generator's, whether the WGAN gradient penalty
    applies, and the critic's loss when it cannot tell real from fake (all scores 0)."""

    critic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]
    penalised: bool
    undecided: float


ADVERSARIAL = {
    "wgan_gp": Adversarial(critic_loss, generator_adversarial_loss, True, 0.0),
    "bce": Adversarial(bce_critic_loss, bce_generator_loss, False, 2 * math.log(2)),
    "hinge": Adversarial(hinge_critic_loss, generator_adversarial_loss, False, 2.0),
}


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (||grad critic(x_hat)||_2 - 1)^2 on x_hat between real and fake.

    ``alpha`` (N, 1, 1, 1) in [0, 1] is passed in, so the caller owns the random draw (and its
    reproducibility). Computed in float32: the penalty's second-order graph is fragile in float16.
    """
    leaf = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
    mixed = leaf.view_as(leaf)  # a non-leaf input: autograd.grad then works under module hooks (FlopCounterMode)
    with torch.autocast(device_type=mixed.device.type, enabled=False):
        scores = critic(mixed)
    grad, = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def au_regression_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """EM conditional loss: squared error of AU intensities, summed over AUs, averaged over images.

    Summed like the StarGAN classification loss, so one lambda_cls means the same for both and a
    single AU's error does not shrink as more AUs are modelled.
    """
    return F.mse_loss(predicted.float(), target.float(), reduction="sum") / len(predicted)


def multilabel_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """StarGAN with binary AUs: BCE summed over labels, averaged over images (as in the authors' code)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="sum") / len(logits)


def category_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """StarGAN with emotion categories: cross-entropy against the one-hot target's class."""
    return F.cross_entropy(logits.float(), target.argmax(dim=1))


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reconstruction and cycle consistency: L1 keeps edges sharper than L2."""
    return (output.float() - target.float()).abs().mean()
