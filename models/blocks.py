"""Building blocks the generators and the critic share."""

from __future__ import annotations

import torch
from torch import nn

DOWNSAMPLINGS = 4  # the EM's encoder and the critic halve the image this many times
FACTOR = 2**DOWNSAMPLINGS


def check_image_size(height: int, width: int) -> None:
    """Both generators and the critic need sides that halve cleanly ``DOWNSAMPLINGS`` times."""
    if height % FACTOR or width % FACTOR or height < FACTOR or width < FACTOR:
        raise ValueError(f"image size {height}x{width} is not a positive multiple of {FACTOR}: resize or crop it")


def norm(channels: int) -> nn.InstanceNorm2d:
    """Instance norm without running statistics, so train and eval modes compute the same."""
    return nn.InstanceNorm2d(channels, affine=True)


def tile(labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, K) labels -> (N, K, H, W) constant maps the size of ``like``."""
    return labels[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), norm(channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
