"""The discriminator both generators share: a PatchGAN critic with a label head.

Four stride-2 convolutions map an (H, W) image to an (H/16, W/16) grid of real/fake scores, each
judging one patch; a convolution spanning that whole grid reads the labels (AU logits or
intensities, or category logits) from the same features. No normalisation layers: the WGAN-GP
penalty is defined per sample, and batch statistics would couple the samples.
"""

from __future__ import annotations

import torch
from torch import nn

from ausynth.models.blocks import DOWNSAMPLINGS, FACTOR, check_image_size


class PatchDiscriminator(nn.Module):
    """Returns (patch scores (N, 1, H/16, W/16), labels (N, n_labels))."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], n_labels: int, base_channels: int) -> None:
        super().__init__()
        check_image_size(*image_size)
        layers: list[nn.Module] = []
        c_in, c_out = in_channels, base_channels
        for _ in range(DOWNSAMPLINGS):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            c_in, c_out = c_out, c_out * 2
        self.features = nn.Sequential(*layers)
        self.source = nn.Conv2d(c_in, 1, 3, padding=1, bias=False)
        self.labels = nn.Conv2d(c_in, n_labels, (image_size[0] // FACTOR, image_size[1] // FACTOR), bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.source(h), self.labels(h).flatten(1)
