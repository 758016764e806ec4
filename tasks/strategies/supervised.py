"""The baseline: the labelled training rows alone."""

from __future__ import annotations

from ausynth.tasks.strategies.base import Strategy


class Supervised(Strategy):
    name = "supervised"

    def added(self, cfg, inputs, train, seed):
        return None

    def key_parts(self, cfg, inputs):
        return None
