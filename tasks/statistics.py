"""Statistics over seeds, and the view of the most correlated AU pairs.

Seed statistics work on the per-seed results table (``per_seed.csv``: a row per (strategy,
seed) with columns ``strategy``, ``seed`` and flat metrics such as ``f1_mean``, ``fdr_mean``,
``pair_fdr/AU2-AU3``). Conventions:

- Intervals are two-sided Student t intervals, 95 % by default: mean ± t(0.975, n-1) · s / sqrt(n),
  s the sample standard deviation (ddof 1). Runs have 2 to 5 seeds, where the t quantile (12.71
  for 2 seeds, 2.78 for 5) and not 1.96 is what keeps the interval honest. With one seed there is
  no spread to estimate: the interval is NaN and nothing is significant.
- Strategies are compared *paired* by seed: run a with seed s against run b with seed s, so that
  what the seed decides (the classifier's initialisation, the draws of the run) cancels out.
  A seed that one of the two lacks, or where either value is NaN, is dropped; ``n_seeds`` says
  how many pairs are left. ``significant`` means the interval on the mean difference excludes 0
  (a paired t-test at 5 %). Differences are a - b: for FDR a negative difference is the better.

The pair view asks whether a classifier confuses the AUs that come together in training:

- ``top_cooccurring_pairs`` ranks AU pairs by the phi coefficient of their presence in the
  training labels (Pearson's r on 0/1 values), over the rows where both are labelled. Phi, not
  Jaccard or raw co-occurrence, because it is 0 for independent AUs however frequent they are:
  it finds pairs that are correlated, which is what the classifier can wrongly learn. Only pairs
  with phi > 0 are returned.
- ``pair_fp_rates``: for a pair (a, b), among test images where a is present and b absent, the
  share where b is predicted (``fp/a-to-b``), and the same the other way round. Other AUs are not
  constrained (on real faces, images with a single AU are few); on the toy test set, one AU per
  image, this is exactly ``metrics.false_positive_matrix``'s entry.
- ``pair_fdr``: the part of each AU's FDR that its partner causes. For the direction a -> b, the
  share of b's positive predictions made on images where b is absent but a is present; the pair's
  value is the mean of both directions (of the one that is defined, when an AU is never predicted;
  NaN when neither is). Rows where a or b is unlabelled (NaN) are left out of both.
The keys use ``-to-`` and ``-``, not ``->``: MLflow refuses ``>`` in metric names.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

DIFFERENCE_COLUMNS = ["a", "b", "metric", "mean_diff", "ci_low", "ci_high", "n_seeds", "significant",
                      "vs_baseline"]


def seed_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of values over seeds, NaN ignored: the Student t interval of the mean.

    One value: (value, NaN, NaN); none: all NaN. Values that are all equal give low == high == mean.
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def _strategy_order(per_seed: pd.DataFrame, baseline: str) -> list[str]:
    """Strategies in the table's order, the baseline first (so its comparisons come first)."""
    order = list(dict.fromkeys(per_seed["strategy"]))
    return [baseline] + [s for s in order if s != baseline] if baseline in order else order


def paired_differences(per_seed: pd.DataFrame, metric: str, baseline: str = "supervised",
                       confidence: float = 0.95) -> pd.DataFrame:
    """Every pair of strategies compared on one metric, paired by seed: a row per pair.

    Columns (``DIFFERENCE_COLUMNS``): ``a``, ``b``, ``metric``, ``mean_diff`` (mean over seeds of
    a - b), ``ci_low``, ``ci_high`` (its t interval), ``n_seeds`` (seeds both have),
    ``significant`` (the interval excludes 0) and ``vs_baseline`` (b is the baseline). Rows: each
    strategy against the baseline first (a = strategy, b = baseline), then every other pair, a the
    strategy that comes later in the table. For several metrics, ``pd.concat`` the results.
    """
    repeated = per_seed[per_seed.duplicated(["strategy", "seed"], keep=False)]
    if len(repeated):
        raise ValueError("per-seed table has several rows for (strategy, seed) "
                         f"{sorted(set(zip(repeated['strategy'], repeated['seed'])))}")
    values = per_seed.pivot(index="seed", columns="strategy", values=metric)
    rows = []
    for b, a in itertools.combinations(_strategy_order(per_seed, baseline), 2):
        diffs = (values[a] - values[b]).dropna()
        mean, low, high = seed_interval(diffs, confidence)
        rows.append({"a": a, "b": b, "metric": metric, "mean_diff": mean, "ci_low": low, "ci_high": high,
                     "n_seeds": len(diffs), "significant": bool(low > 0 or high < 0), "vs_baseline": b == baseline})
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def format_difference(row, scale: float = 100.0, digits: int = 2) -> str:
    """'+3.21 [+1.02, +5.40]*' for a ``paired_differences`` row: in percentage points by default
    (metrics are fractions), '*' when the interval excludes 0; '+3.21 [n/a]' without an interval."""
    def signed(value: float) -> str:
        return f"{scale * value:+.{digits}f}"

    if np.isnan(row["mean_diff"]):
        return "n/a"
    if np.isnan(row["ci_low"]):
        return f"{signed(row['mean_diff'])} [n/a]"
    star = "*" if row["significant"] else ""
    return f"{signed(row['mean_diff'])} [{signed(row['ci_low'])}, {signed(row['ci_high'])}]{star}"


# ----------------------------------------------------------------------------- correlated AU pairs

def _presence(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(present, labelled) boolean matrices of a label matrix: present means >= 0.5, NaN unlabelled."""
    labels = np.asarray(labels, dtype=float)
    return np.nan_to_num(labels, nan=0.0) >= 0.5, ~np.isnan(labels)


def phi_coefficients(labels: np.ndarray, names: list[str]) -> pd.DataFrame:
    """AU x AU phi coefficients of presence, each over the rows where both AUs are labelled.

    NaN where an AU is constant over those rows (phi is undefined).
    """
    present, labelled = _presence(labels)
    values = pd.DataFrame(np.where(labelled, present.astype(float), np.nan), columns=list(names))
    return values.corr(method="pearson", min_periods=2)


MIN_PHI = 0.1  # below this, two AUs are about independent: no correlation for a strategy to undo


def top_cooccurring_pairs(train_labels: np.ndarray, names: list[str], k: int = 3,
                          min_phi: float = MIN_PHI) -> list[tuple[str, str]]:
    """The k AU pairs with the highest phi coefficient in training, highest first (only phi >= ``min_phi``;
    ties in the order of ``names``). Each pair is in the order of ``names``."""
    phi = phi_coefficients(train_labels, names)
    upper = np.triu(np.ones(phi.shape, dtype=bool), k=1)
    pairs = phi.where(upper).stack().sort_values(ascending=False, kind="stable")
    return [(str(a), str(b)) for a, b in pairs[(pairs > 0) & (pairs >= min_phi)].index[:k]]


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, names: list[str], a: str, b: str):
    """Masks over the rows where a and b are both labelled: (a present and b absent, b predicted)."""
    present, labelled = _presence(y_true)
    i, j = list(names).index(a), list(names).index(b)
    known = labelled[:, i] & labelled[:, j]
    fired = (np.asarray(y_pred).astype(np.int64)[:, j] == 1) & known
    only_a = present[:, i] & ~present[:, j] & known
    return only_a, fired


def pair_fp_rates(y_true: np.ndarray, y_pred: np.ndarray, names: list[str],
                  pairs: list[tuple[str, str]]) -> dict[str, float]:
    """``fp/a-to-b``: among test images with a present and b absent, the share where b is predicted;
    and ``fp/b-to-a``, for every pair. NaN where no test image has a without b."""
    rates = {}
    for a, b in pairs:
        for i, j in ((a, b), (b, a)):
            only_i, fired = _confusions(y_true, y_pred, names, i, j)
            rates[f"fp/{i}-to-{j}"] = float(fired[only_i].mean()) if only_i.any() else float("nan")
    return rates


def pair_fdr(y_true: np.ndarray, y_pred: np.ndarray, names: list[str], pair: tuple[str, str]) -> float:
    """The share of each AU's positive predictions made where it is absent but its partner is
    present, averaged over the pair's two directions that are defined (NaN if neither AU fires)."""
    shares = []
    for i, j in (pair, pair[::-1]):
        only_i, fired = _confusions(y_true, y_pred, names, i, j)
        if fired.any():
            shares.append((fired & only_i).sum() / fired.sum())
    return float(np.mean(shares)) if shares else float("nan")


def pair_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str],
                 pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Flat per-run pair figures: ``pair_fp_rates`` and ``pair_fdr/a-b`` for each pair (NaN kept)."""
    fdrs = {f"pair_fdr/{a}-{b}": pair_fdr(y_true, y_pred, names, (a, b)) for a, b in pairs}
    return {**pair_fp_rates(y_true, y_pred, names, pairs), **fdrs}
