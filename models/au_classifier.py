"""The classifier: a CNN backbone and a linear head with one output per label column.

The head's outputs are raw scores ("logits"); the label type the model carries
(``label_type``: see ``tasks/label_types.py``) says what turns them into predictions: a sigmoid
per AU, a softmax over emotion classes, a tanh for valence/arousal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

POOL = 3


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Four stride-2 conv blocks pooled to a 3x3 map: fast on a CPU at 32..128 px.

    The pooled map keeps coarse position (AUs live in places: a toy grid cell, a face
    region); global pooling would throw away where a feature fired.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 4]
        blocks, c_in = [], in_channels
        for c_out in widths:
            blocks.append(_conv_block(c_in, c_out))
            c_in = c_out
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(POOL), nn.Flatten())
        self.out_features = c_in * POOL * POOL

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (random init: nothing is downloaded), any channel count."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.out_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AUClassifier(nn.Module):
    """Outputs one raw score per label column; ``label_type`` travels with the weights.

    ``input_size``: the side the backbone sees. Larger inputs are area-averaged down to it inside
    the model, so a stored, exported or registered model takes images at the size it was trained
    on. Averaging is what an ideal detector does with pixel noise that is finer than the pattern:
    at the toy's hard noise a 4x4 average (96 -> 24 px) cut the baseline's FDR from 55% to 42%
    and its training time eightfold (README, *Classifier input size*). None: the images' own size.
    """

    def __init__(self, n_outputs: int, in_channels: int = 1, backbone: str = "small_cnn", width: int = 32,
                 label_type: str = "au_presence", input_size: int | None = None) -> None:
        super().__init__()
        self.label_type = label_type
        self.input_size = input_size
        if label_type == "emotion" and n_outputs < 2:
            raise ValueError(f"an emotion classifier needs at least two classes, got {n_outputs} output(s)")
        if backbone == "small_cnn":
            self.backbone: nn.Module = SmallCNN(in_channels, width)
        elif backbone == "resnet18":
            self.backbone = ResNet18(in_channels)
        else:
            raise ValueError(f"unknown backbone {backbone!r}: use 'small_cnn' or 'resnet18'")
        self.head = nn.Linear(self.backbone.out_features, n_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's features of images at any size at or above ``input_size``."""
        if self.input_size is not None and x.shape[-1] > self.input_size:
            x = F.adaptive_avg_pool2d(x, self.input_size)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
