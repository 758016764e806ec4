"""The ways to enlarge a training set that the comparison sets against each other, by name.

Every strategy but the supervised baseline adds the same number of images (``augment.size``), so
differences in the downstream classifier come from what was added, not how much. A new strategy
is one module with a ``Strategy`` subclass (see ``base.py``) and its line in ``STRATEGIES``; one
whose classifier is not the standard one trained on the enlarged set overrides ``Strategy.fit``.
"""

from __future__ import annotations

from ausynth.tasks.strategies.base import Inputs, Strategy
from ausynth.tasks.strategies.generator import Generator
from ausynth.tasks.strategies.pseudo_label import PseudoLabel
from ausynth.tasks.strategies.semi_supervised_gan import SemiSupervisedGAN
from ausynth.tasks.strategies.supervised import Supervised
from ausynth.tasks.strategies.upsample import Upsample

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Supervised(), Upsample(), PseudoLabel(), Generator(),
                                                       SemiSupervisedGAN())}
BASELINE = STRATEGIES["supervised"]


def strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}: use one of {list(STRATEGIES)}") from None


__all__ = ["BASELINE", "Inputs", "STRATEGIES", "Strategy", "strategy"]
