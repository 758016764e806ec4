"""Mode collapse, measured: how much a generator's images of one label vary, against real images of it.

A collapsed generator makes (nearly) the same image whatever its noise or source; its sample grid may
still look fine, one good digit per column. The score of a label is the mean pairwise Euclidean
distance between generated images of that label divided by the same between real images that show
it: about 1 when the generator varies as much as the data, near 0 when it has collapsed. Distances
are on the flattened images, so the scale of the pixels cancels in the ratio.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_IMAGES = 256  # per side: the pairwise mean is stable long before, and pairs grow quadratically


def spread(images: torch.Tensor | np.ndarray) -> float:
    """Mean pairwise Euclidean distance between the (flattened) images; NaN for fewer than two."""
    flat = torch.as_tensor(images).flatten(1).float()
    if len(flat) < 2:
        return float("nan")
    keep = np.linspace(0, len(flat) - 1, min(len(flat), MAX_IMAGES)).round().astype(np.int64)
    return torch.pdist(flat[torch.from_numpy(keep).to(flat.device)]).mean().item()


def diversity(generated: torch.Tensor | np.ndarray, real: torch.Tensor | np.ndarray) -> float:
    """The generated images' spread over the real images'; NaN when the real ones have none to compare with."""
    real_spread = spread(real)
    return spread(generated) / real_spread if real_spread > 0 else float("nan")
