"""The semi-supervised GAN's networks (Odena 2016; Salimans et al. 2016): a discriminator that is
also the classifier, and a small generator from noise.

The discriminator is the comparison's ``AUClassifier`` (its backbone and label head, whose
activation the label type picks: sigmoid per AU, tanh for valence/arousal, softmax over emotions)
with one more linear head on the same features, real or fake. Training it only shapes those
features; what the comparison then tests is ``discriminator.classifier``, a plain ``AUClassifier``,
so it is stored, loaded, evaluated and logged exactly like every other strategy's classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from ausynth.models.au_classifier import AUClassifier

UPSAMPLINGS = 3  # the generator starts at 1/8 of the image side


class SemiSupervisedDiscriminator(nn.Module):
    """x in [-1, 1] (N, C, H, W) -> (real/fake logits (N,), label logits (N, K))."""

    def __init__(self, n_outputs: int, in_channels: int, backbone: str, width: int, label_type: str,
                 input_size: int | None = None) -> None:
        super().__init__()
        self.classifier = AUClassifier(n_outputs, in_channels, backbone, width, label_type=label_type,
                                       input_size=input_size)
        self.source = nn.Linear(self.classifier.backbone.out_features, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.classifier.features(x)
        return self.source(features).squeeze(1), self.classifier.head(features)


class NoiseGenerator(nn.Module):
    """DCGAN-style (Radford et al. 2016): z (N, noise_dim) -> images in [-1, 1] (N, C, H, W).

    A dense projection to ``8 * base_channels`` maps at 1/8 of the image side, then three
    nearest-neighbour upsamplings, each followed by a 3x3 convolution, batch norm and ReLU
    (upsample-then-convolve avoids the checkerboard of strided transposed convolutions), and a 3x3
    convolution to the image's channels with a tanh.
    """

    def __init__(self, noise_dim: int, image_shape: tuple[int, int, int], base_channels: int) -> None:
        super().__init__()
        height, width, channels = image_shape
        factor = 2**UPSAMPLINGS
        if height % factor or width % factor:
            raise ValueError(f"image size {height}x{width} is not a multiple of {factor}: resize or crop it")
        c = base_channels * factor
        self.start = (c, height // factor, width // factor)
        cells = c * self.start[1] * self.start[2]
        self.project = nn.Sequential(nn.Linear(noise_dim, cells, bias=False), nn.BatchNorm1d(cells),
                                     nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for _ in range(UPSAMPLINGS):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(c, c // 2, 3, padding=1, bias=False),
                       nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        layers += [nn.Conv2d(c, channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(len(z), *self.start))
