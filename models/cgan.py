"""A conditional DCGAN from noise (Radford et al. 2016; conditioned as in Mirza & Osindero 2014) and an
AC-GAN discriminator (Odena et al. 2017) that also reads the label.

Unlike the EM and StarGAN, which edit a given face, G(z, c) draws an image from noise z and a label
vector c (binary AUs, AU intensities, a one-hot emotion, or valence/arousal), so an AU-isolated image
needs no neutral source: ask for a one-hot c. A dense layer projects [z, c] to an (H/16, W/16) map;
four stages each double its size and halve its channels, by nearest-neighbour upsampling and a 3x3
convolution (no checkerboard artefacts) or by DCGAN's 4x4 transposed convolution, each with batch
norm and an activation; a 3x3 convolution and tanh give the image in [-1, 1].

D(x, c) returns a real/fake score and label logits. It reads the label by projection (Miyato & Koyama
2018: the score gains <embed(c), phi(x)>, so it judges whether x fits c, not only whether x looks real)
or by concatenation (c tiled as extra input channels). The label head is the auxiliary classifier:
the kind's conditional loss trains it on real images and asks generated ones to satisfy it. The
features are flattened, not pooled: on the toy grid an AU is a position. No normalisation in D: the
WGAN-GP penalty is per sample, and batch statistics would couple the samples.
"""

from __future__ import annotations

import torch
from torch import nn

from ausynth.models.blocks import DOWNSAMPLINGS, FACTOR, check_image_size, tile

ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": lambda: nn.ReLU()}


def _up(c_in: int, c_out: int, upsampling: str, activation: str) -> nn.Sequential:
    if upsampling == "nearest":
        resize = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    else:
        resize = [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False)]
    return nn.Sequential(*resize, nn.BatchNorm2d(c_out), ACTIVATIONS[activation]())


class CGANGenerator(nn.Module):
    """G(z, c): noise ``z`` (N, noise_dim) and labels ``c`` (N, K) -> images in [-1, 1] (N, C, H, W)."""

    def __init__(self, out_channels: int, image_size: tuple[int, int], n_labels: int, noise_dim: int,
                 base_channels: int, upsampling: str = "nearest", activation: str = "leaky_relu") -> None:
        super().__init__()
        check_image_size(*image_size)
        self.start = (image_size[0] // FACTOR, image_size[1] // FACTOR)
        widths = [base_channels * min(2**i, 8) for i in reversed(range(DOWNSAMPLINGS + 1))]  # scales H/16, .., H
        self.project = nn.Linear(noise_dim + n_labels, widths[0] * self.start[0] * self.start[1], bias=False)
        self.body = nn.Sequential(
            nn.BatchNorm2d(widths[0]), ACTIVATIONS[activation](),
            *[_up(widths[i], widths[i + 1], upsampling, activation) for i in range(DOWNSAMPLINGS)],
            nn.Conv2d(widths[-1], out_channels, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, labels.to(z.dtype)], dim=1))
        return self.body(h.view(len(z), -1, *self.start))


class CGANDiscriminator(nn.Module):
    """D(x, c) -> (real/fake scores (N, 1), label logits (N, K))."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], n_labels: int, base_channels: int,
                 conditioning: str = "projection") -> None:
        super().__init__()
        check_image_size(*image_size)
        self.concat = conditioning == "concat"
        layers: list[nn.Module] = []
        c_in, c_out = in_channels + (n_labels if self.concat else 0), base_channels
        for _ in range(DOWNSAMPLINGS):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in, c_out = c_out, c_out * 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        n_features = c_in * (image_size[0] // FACTOR) * (image_size[1] // FACTOR)
        self.source = nn.Linear(n_features, 1)
        self.labels = nn.Linear(n_features, n_labels)
        self.embed = None if self.concat else nn.Linear(n_labels, n_features, bias=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = labels.to(x.dtype)
        h = self.features(torch.cat([x, tile(labels, x)], dim=1) if self.concat else x)
        score = self.source(h)
        if self.embed is not None:
            score = score + (self.embed(labels) * h).sum(dim=1, keepdim=True)
        return score, self.labels(h)
