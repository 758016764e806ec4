"""StarGAN (Choi et al., CVPR 2018), after the authors' code (yunjey/stargan).

One generator G(x, c) serves every target domain c: the target label vector (binary AUs or a
one-hot emotion category) is tiled over the image and concatenated to it as extra channels,
then the image goes down twice, through residual blocks and up twice to a tanh output in
[-1, 1]. The discriminator (``PatchDiscriminator``) has a source head (real/fake per patch) and
a classification head over the same labels.
"""

from __future__ import annotations

import torch
from torch import nn

from ausynth.models.blocks import ResidualBlock, check_image_size, norm, tile


class StarGANGenerator(nn.Module):
    """G(x, c): ``x`` in [-1, 1] (N, C, H, W), ``c`` the absolute target labels (N, K)."""

    def __init__(self, in_channels: int, n_labels: int, base_channels: int, n_res_blocks: int) -> None:
        super().__init__()
        c = base_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels + n_labels, c, 7, padding=3, bias=False), norm(c),
                                   nn.ReLU(inplace=True)]
        for _ in range(2):
            layers += [nn.Conv2d(c, c * 2, 4, stride=2, padding=1, bias=False), norm(c * 2), nn.ReLU(inplace=True)]
            c *= 2
        layers += [ResidualBlock(c) for _ in range(n_res_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), norm(c // 2),
                       nn.ReLU(inplace=True)]
            c //= 2
        layers += [nn.Conv2d(c, in_channels, 7, padding=3, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_image_size(x.shape[2], x.shape[3])
        return self.net(torch.cat([x, tile(target.to(x.dtype), x)], dim=1))
