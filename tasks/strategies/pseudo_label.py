"""Pseudo-labels: unlabelled pool images labelled by the baseline classifier (the teacher)."""

from __future__ import annotations

from ausynth.tasks import datasets
from ausynth.tasks.pseudo_labels import load_scores, pseudo_labelled
from ausynth.tasks.strategies.base import Strategy, sample


class PseudoLabel(Strategy):
    name = "pseudo_label"
    needs_pool = True
    needs_pool_scores = True

    def added(self, cfg, inputs, train, seed):
        pool = datasets.load_set(inputs.dataset, "unlabelled")
        labelled = pseudo_labelled(pool, load_scores(inputs.pool_scores), cfg.pseudo_label, cfg.classifier.threshold)
        what = "pseudo-labelled images" + (f" passing pseudo_label.confidence={cfg.pseudo_label.confidence}"
                                           if cfg.pseudo_label.confidence is not None else "")
        return sample(labelled, cfg.augment.size, seed, what)

    def key_parts(self, cfg, inputs):
        return cfg.augment, cfg.pseudo_label, cfg.classifier.threshold, inputs.pool_scores.key
