"""The Bayes-ideal observer of the toy set: the best any classifier could do on its test images.

A toy cell is blank or one of a known set of digit images, plus i.i.d. Gaussian noise, clipped to
[0, 1] and rounded to uint8 (``tasks/toy_data.py``). So the exact likelihood of a cell under
'blank' and under every digit image is known, and the likelihood ratio of 'digit k drawn from the
test pool' against 'blank' is, by the Neyman-Pearson lemma, the score no classifier can beat for
AU k among scores computed from cell k alone: at every false-positive rate it has the highest
expected recall, hence the highest precision and F1. The observer knows the test set's own digit
images, so it bounds even a classifier trained on unlimited grids.

Two observers, because the test set differs from the training grids in one way a classifier could
in principle use: it holds exactly one AU per image, so another cell's digit is evidence that cell
k is blank. ``ideal_scores`` judges each AU by its own cell: this is what the training data teach
(their AUs are independent except the AU2/AU3 pair, whose coupling only adds confusion on the test
set), so it bounds any classifier that learnt them. ``one_au_posterior`` also uses the
'exactly one AU' structure and bounds every classifier whatsoever.

Why: a published figure (the thesis') can lie outside what the data allow. ``f1_bound`` turns the
ideal scores into the highest mean F1 any classifier can reach at a given mean FDR, with per-AU
thresholds picked on the test set itself; a target above it is not attainable under these rules
(up to the test set's sampling noise).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm
from sklearn.metrics import average_precision_score, precision_recall_curve

from ausynth.configs.schema import ToyDatasetConfig
from ausynth.tasks import toy_data
from ausynth.tasks.au_regions import grid_masks

# Lagrange multipliers tried for the F1-at-FDR bound; any one gives a valid bound, more make it tighter
MULTIPLIERS = np.concatenate([[0.0], np.logspace(-3, 3, 601)])


def cell_log_likelihood(cells: np.ndarray, templates: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """(N, T) log p(cell | template) up to a constant shared by all templates.

    ``cells``: (N, P) uint8 pixels; ``templates``: (T, P) clean intensities in [0, 1]. A pixel is
    ``rint(clip(s + n, 0, 1) * 255)`` with n ~ N(mean, std): 0 and 255 carry the clipped tails'
    mass, any other value the Gaussian density (its 1/255 bin is much narrower than ``std``). The
    density's quadratic expands into matrix products, so all templates score at once.
    """
    x = torch.from_numpy(np.asarray(cells, dtype=np.float64))
    s = np.asarray(templates, dtype=np.float64)
    low, high = (x == 0).double(), (x == 255).double()
    inside = 1.0 - low - high
    v = (x / 255.0 - mean) * inside
    log_low = torch.from_numpy(norm.logcdf((0.5 / 255 - s - mean) / std))
    log_high = torch.from_numpy(norm.logsf((254.5 / 255 - s - mean) / std))
    s = torch.from_numpy(s)
    squares = (v * v).sum(1, keepdim=True) - 2 * v @ s.T + inside @ (s * s).T
    return low @ log_low.T + high @ log_high.T - squares / (2 * std * std)


def ideal_scores(images: np.ndarray, config: ToyDatasetConfig) -> np.ndarray:
    """(N, 9) log likelihood ratios 'digit k present' vs 'blank' for toy grids ``images``
    (N, 96, 96, 1) drawn like ``config``'s test set (its difficulty, its test pool of digits)."""
    mean, std = toy_data.NOISE[config.difficulty]
    if std == 0:
        raise ValueError("the ideal observer needs noise: at difficulty 'clean' every cell is told apart exactly")
    digits, labels = toy_data.load_digits(config.digits, config.mnist_path)
    _, pool = toy_data.split_digit_pools(labels, config.seed)
    masks = grid_masks(toy_data.AU_COLUMNS, toy_data.GRID, toy_data.CELL)
    scores = np.empty((len(images), toy_data.N_AUS))
    for k, mask in enumerate(masks.values()):
        cells = images[..., 0][:, mask]  # (N, 32 * 32), row-major like the flattened templates
        templates = digits[pool[labels[pool] == k + 1]].reshape(-1, cells.shape[1])
        present = torch.logsumexp(cell_log_likelihood(cells, templates, mean, std), 1) - np.log(len(templates))
        blank = cell_log_likelihood(cells, np.zeros((1, cells.shape[1])), mean, std)[:, 0]
        scores[:, k] = (present - blank).numpy()
    return scores


def one_au_posterior(scores: np.ndarray) -> np.ndarray:
    """Log posterior of each AU given the whole grid, when exactly one AU is active (uniformly).

    The grid's likelihood under 'AU k alone' is cell k's digit likelihood times every other cell's
    blank likelihood, so the posterior is the softmax of the per-cell log likelihood ratios."""
    return scores - torch.logsumexp(torch.from_numpy(scores), 1, keepdim=True).numpy()


def _curves(truth: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per AU, the F1 and FDR at every threshold (predicting nothing counts as F1 0, FDR 0)."""
    curves = []
    for k in range(truth.shape[1]):
        precision, recall, _ = precision_recall_curve(truth[:, k] > 0.5, scores[:, k])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        curves.append((f1, 1.0 - precision))
    return curves


def _means(curves: list[tuple[np.ndarray, np.ndarray]], picks: list[int]) -> tuple[float, float]:
    """Mean F1 and mean FDR over AUs at the picked threshold of each AU's curve."""
    return (float(np.mean([f1[i] for (f1, _), i in zip(curves, picks)])),
            float(np.mean([fdr[i] for (_, fdr), i in zip(curves, picks)])))


def f1_bound(truth: np.ndarray, scores: np.ndarray, max_fdr: float) -> tuple[float, float]:
    """(reached, bound): mean F1 over AUs at mean FDR <= ``max_fdr``, thresholds per AU free.

    ``bound`` is the Lagrangian dual: for any multiplier l, l * max_fdr + mean over AUs of
    max_t (F1 - l * FDR) is at least the best constrained mean F1 (weak duality), so the smallest
    over ``MULTIPLIERS`` is an upper bound. ``reached`` is the best mean F1 of those multipliers'
    threshold choices that keep the mean FDR within ``max_fdr``: a point the scores do reach.
    """
    curves = _curves(truth, scores)
    bound, reached = np.inf, 0.0
    for multiplier in MULTIPLIERS:
        f1_mean, fdr_mean = _means(curves, [np.argmax(f1 - multiplier * fdr) for f1, fdr in curves])
        bound = min(bound, f1_mean + multiplier * (max_fdr - fdr_mean))
        if fdr_mean <= max_fdr:
            reached = max(reached, f1_mean)
    return float(reached), float(bound)


def ranking_summary(truth: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Mean average precision over AUs and the highest mean F1 (per-AU thresholds) with its mean FDR."""
    curves = _curves(truth, scores)
    max_f1, fdr = _means(curves, [np.argmax(f1) for f1, _ in curves])
    return {"average_precision": float(np.mean([average_precision_score(truth[:, k] > 0.5, scores[:, k])
                                                 for k in range(truth.shape[1])])),
            "max_f1": max_f1, "fdr_at_max_f1": fdr}
