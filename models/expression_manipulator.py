"""Expression Manipulator (Ling et al., ECCV 2020): a U-Net conditioned on relative AUs.

The condition is the change asked for, target AUs minus the input's AUs, so a zero vector
means 'keep the face' and the network only has to learn edits. The encoder halves the image
four times; the decoder doubles it back, and each skip connection passes through a multi-scale
feature fusion (MSF) unit that fuses the encoder feature of its scale with the decoder feature
coming up from the scale below and the relative-AU map tiled at its scale. The AU map also joins
the encoder output at the bottleneck. The output is a tanh image in [-1, 1].

The paper leaves the MSF internals brief; here it is a gated unit in the spirit of STGAN's
selective transfer: a sigmoid gate computed from (skip, deeper feature, AU map) picks, per
position and channel, between the encoder feature unchanged and a new candidate feature computed
from all three. Where the requested change is zero, passing the skip through keeps identity and
background. The fused feature is the decoder's feature at that scale, so the unit costs one
3x3 convolution per scale (the decoder's own), which keeps the network trainable on a CPU.

Optionally the edit is confined to where the AUs asked to change live (``regions``: one weight
map per AU, e.g. its FACS region). The output is then the input plus the network's change times
a mask, the union of the regions of the AUs whose requested change is non-zero, in the spirit of
GANimation's attention mask but fixed by the AU's anatomy instead of learnt: an edit for one AU
cannot repaint the rest of the face, so the network has to put that AU where it belongs.
"""

from __future__ import annotations

import torch
from torch import nn

from ausynth.models.blocks import DOWNSAMPLINGS, ResidualBlock, check_image_size, norm, tile


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False), norm(c_out),
                         nn.LeakyReLU(0.2, inplace=True))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), norm(c_out),
                         nn.ReLU(inplace=True))


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), norm(c_out), nn.ReLU(inplace=True))


class MSFUnit(nn.Module):
    """Fuses a skip feature with the upsampled deeper feature and the relative-AU map at one scale."""

    def __init__(self, channels: int, n_aus: int) -> None:
        super().__init__()
        mixed = 2 * channels + n_aus
        self.gate = nn.Conv2d(mixed, channels, 1)
        self.candidate = _conv(mixed, channels)

    def forward(self, skip: torch.Tensor, deeper: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([skip, deeper, tile(aus, skip)], dim=1)
        gate = torch.sigmoid(self.gate(mixed))
        return gate * self.candidate(mixed) + (1 - gate) * skip


FULL_CHANGE = 0.5  # a requested change of this size or more opens its AU's region fully; smaller ones partly


def edit_mask(regions: torch.Tensor, relative_aus: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W): where the image may change, from (K, H, W) regions and (N, K) requested changes."""
    opening = (relative_aus.abs() / FULL_CHANGE).clamp(max=1)
    return (opening[:, :, None, None] * regions).amax(dim=1, keepdim=True)


class ExpressionManipulator(nn.Module):
    """G(x, d): ``x`` in [-1, 1] (N, C, H, W), ``d`` the relative AUs (N, K), target minus source;
    ``regions`` (K, H, W) in [0, 1], if given, confines each AU's edit to its region."""

    def __init__(self, in_channels: int, n_aus: int, base_channels: int, n_res_blocks: int,
                 regions: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("regions", regions, persistent=False)  # rebuilt from the architecture, never saved
        widths = [base_channels * min(2**i, 8) for i in range(DOWNSAMPLINGS + 1)]  # scales H, H/2, .., H/16
        self.stem = _conv(in_channels, widths[0])
        self.encoder = nn.ModuleList(_down(widths[i], widths[i + 1]) for i in range(DOWNSAMPLINGS))
        self.bottleneck = nn.Sequential(_conv(widths[-1] + n_aus, widths[-1]),
                                        *[ResidualBlock(widths[-1]) for _ in range(n_res_blocks)])
        self.upsample = nn.ModuleList(_up(widths[i + 1], widths[i]) for i in range(DOWNSAMPLINGS))
        self.fusion = nn.ModuleList(MSFUnit(widths[i], n_aus) for i in range(DOWNSAMPLINGS))
        self.out = nn.Sequential(nn.Conv2d(widths[0], in_channels, 3, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor, relative_aus: torch.Tensor) -> torch.Tensor:
        check_image_size(x.shape[2], x.shape[3])
        aus = relative_aus.to(x.dtype)
        skips = [self.stem(x)]
        for down in self.encoder:
            skips.append(down(skips[-1]))
        bottom = skips.pop()
        h = self.bottleneck(torch.cat([bottom, tile(aus, bottom)], dim=1))
        for level in reversed(range(DOWNSAMPLINGS)):
            h = self.fusion[level](skips[level], self.upsample[level](h), aus)
        image = self.out(h)
        if self.regions is None:
            return image
        return x + edit_mask(self.regions.to(image.dtype), aus) * (image - x)
