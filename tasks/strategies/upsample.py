"""Random up-sampling: labelled training rows again, drawn with replacement.

It adds images but no new information, so it measures what mere repetition does (the thesis
found it hurts: it repeats the data's AU correlations too).
"""

from __future__ import annotations

import numpy as np

from ausynth.tasks.strategies.base import Strategy


class Upsample(Strategy):
    name = "upsample"

    def added(self, cfg, inputs, train, seed):
        extra = train.subset(np.random.default_rng(seed).integers(0, len(train), size=cfg.augment.size))
        extra.frame["origin"] = "upsampled"
        return extra
