"""Metrics per label type, and the matrices that show AU confusion.

- AU presence: per-AU precision, recall, F1 and FDR (false discovery rate) = FP / (TP + FP) =
  1 - precision. Conventions, so that a mean says something about the classifier:

  * An AU is *scorable* when the test truth has at least one positive for it and it is not
    among the caller's ``untrainable`` AUs (no positive in the training labels, see
    ``untrainable_aus``). Without a positive, recall is undefined and F1 is 0 whatever the
    classifier does, so every ``*_mean`` is over scorable AUs only. The table's ``scorable``
    column, ``not_scorable(table)`` and the flat ``n_scorable`` / ``n_not_scorable`` say which and
    how many; ``per_au_metrics`` warns (``NotScorableWarning``) naming them.
  * A ratio with a zero denominator is NaN in the table, never a made-up 0 or 1: precision and
    FDR of an AU never predicted, recall of an AU with no positive, F1 of an AU with neither.
    ``flat_metrics`` leaves NaN per-AU values out, so none reaches MLflow per AU.
  * ``precision_mean`` and ``fdr_mean`` are over the scorable AUs predicted at least once
    (``n_not_predicted`` counts the scorable AUs that were not; their F1 and recall are 0 and stay
    in those means). Reporting FDR 0 for an AU never predicted would reward a classifier for
    staying silent. Both means are over the same AUs, and ``fdr_mean`` is computed as
    ``1 - precision_mean``, so ``fdr_mean + precision_mean == 1`` holds exactly.
  * A mean over no AU is NaN.
- Emotion: the predicted class is the highest score, the true class the one-hot (or soft)
  target's highest entry; accuracy, macro F1 (scikit-learn: over the classes present in truth or
  prediction) and per-class precision / recall / F1.
- AU intensity and valence/arousal: per output CCC (Lin's concordance correlation coefficient),
  RMSE and MAE.

NaN in the truth means 'not labelled': such entries are left out, per column (per row for
emotions). ``tasks/label_types.py`` picks the functions that fit a label type.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

REGRESSION_METRICS = ("ccc", "rmse", "mae")
AU_METRICS = ("precision", "recall", "f1", "fdr")


class NotScorableWarning(UserWarning):
    """Some AUs could not be scored and were left out of the means (see the module docstring)."""


def binarize(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return (np.asarray(scores) >= threshold).astype(np.int64)


def untrainable_aus(train_labels: np.ndarray, names: list[str]) -> list[str]:
    """AUs with no positive (>= 0.5) among the training labels (NaN counts as not positive).

    A classifier cannot learn such an AU, so ``per_au_metrics(..., untrainable=...)`` leaves it
    out of the means instead of letting it drag them down.
    """
    positive = (np.nan_to_num(np.asarray(train_labels, dtype=float), nan=0.0) >= 0.5).any(axis=0)
    return [name for name, seen in zip(names, positive) if not seen]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (the value is undefined, not 0)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def per_au_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str],
                   untrainable: list[str] | None = None) -> pd.DataFrame:
    """A row per AU: precision, recall, f1, fdr, support (positives in the truth), predicted
    (positive predictions) and scorable (see the module docstring for the conventions).

    Truth is thresholded at 0.5 (soft labels); NaN truth entries are left out of their AU's counts,
    with the predictions on them. ``untrainable``: AUs with no positive in the training labels
    (``untrainable_aus``), marked not scorable like AUs with no positive in the truth.
    """
    unknown = sorted(set(untrainable or []) - set(names))
    if unknown:
        raise ValueError(f"untrainable AUs {unknown} are not among the names {list(names)}")
    y_true = np.asarray(y_true, dtype=float)
    labelled = ~np.isnan(y_true)
    truth = (np.nan_to_num(y_true, nan=0.0) >= 0.5) & labelled
    pred = (np.asarray(y_pred).astype(np.int64) == 1) & labelled
    tp, fp, fn = (truth & pred).sum(axis=0), (~truth & pred).sum(axis=0), (truth & ~pred).sum(axis=0)
    table = pd.DataFrame(
        {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
         "fdr": _ratio(fp, tp + fp), "support": tp + fn, "predicted": tp + fp},
        index=pd.Index(names, name="au"))
    table["scorable"] = (table["support"] > 0) & ~table.index.isin(untrainable or [])
    _warn_not_scorable(table, untrainable or [])
    return table


def _warn_not_scorable(table: pd.DataFrame, untrainable: list[str]) -> None:
    """One warning per table naming the AUs left out of the means, and why."""
    reasons = [f"{au} (no positive in the {'training labels' if au in untrainable else 'test truth'})"
               for au in not_scorable(table)]
    if reasons:
        warnings.warn(f"{len(reasons)} of {len(table)} AUs cannot be scored and are left out of the means: "
                      + ", ".join(reasons), NotScorableWarning, stacklevel=3)


def not_scorable(table: pd.DataFrame) -> list[str]:
    """The AUs of a ``per_au_metrics`` table left out of the means (e.g. to log as a tag)."""
    return [str(au) for au in table.index[~table["scorable"]]]


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Unweighted means over the scorable AUs (the thesis' 'mean F1' and 'mean FDR').

    Precision and FDR are averaged over the scorable AUs predicted at least once; ``fdr_mean`` is
    ``1 - precision_mean`` (the mean of those AUs' FDRs without rounding drift). NaN over no AU.
    """
    scorable = table[table["scorable"]]
    precision = float(scorable.loc[scorable["predicted"] > 0, "precision"].mean())
    return {"precision_mean": precision, "recall_mean": float(scorable["recall"].mean()),
            "f1_mean": float(scorable["f1"].mean()), "fdr_mean": 1.0 - precision}


def flat_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Per-AU and mean figures as one flat mapping, e.g. ``f1_AU3`` and ``f1_mean``, with the counts
    ``n_scorable``, ``n_not_scorable`` and ``n_not_predicted`` (scorable AUs never predicted: out
    of the precision and FDR means). Undefined (NaN) per-AU values are left out."""
    flat = {f"{metric}_{au}": float(table.at[au, metric]) for au in table.index for metric in AU_METRICS
            if not np.isnan(table.at[au, metric])}
    scorable = table["scorable"]
    counts = {"n_scorable": float(scorable.sum()), "n_not_scorable": float((~scorable).sum()),
              "n_not_predicted": float((scorable & (table["predicted"] == 0)).sum())}
    return {**flat, **summary(table), **counts}


def cooccurrence(labels: np.ndarray) -> np.ndarray:
    """P(AU j active | AU i active) over a label matrix; rows of never-active AUs are 0.

    With NaN (unlabelled) entries, P(j | i) is taken over the rows where i is active and j labelled.
    """
    labels = np.asarray(labels, dtype=float)
    labelled = (~np.isnan(labels)).astype(float)
    active = binarize(np.nan_to_num(labels, nan=0.0)).astype(float)
    counts = active.T @ active
    base = active.T @ labelled
    return np.divide(counts, base, out=np.zeros_like(counts), where=base > 0)


def false_positive_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Among test images whose only true AU is i, the share in which AU j fires (j != i).

    The diagonal is set to 0: it is recall, shown elsewhere. Rows of AUs with no such image are 0.
    Images with any unlabelled (NaN) AU are left out: they may have a second true AU.
    """
    complete = ~np.isnan(np.asarray(y_true, dtype=float)).any(axis=1)
    y_true, y_pred = binarize(np.nan_to_num(y_true, nan=0.0)), np.asarray(y_pred).astype(float)
    n = y_true.shape[1]
    matrix = np.zeros((n, n))
    single = (y_true.sum(axis=1) == 1) & complete
    for i in range(n):
        rows = single & (y_true[:, i] == 1)
        if rows.any():
            matrix[i] = y_pred[rows].mean(axis=0)
    np.fill_diagonal(matrix, 0.0)
    return matrix


# ----------------------------------------------------------------------------- other label types

def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient, 2 cov / (var_t + var_p + (mean_t - mean_p)^2).

    Population (1/N) moments throughout, as Lin (1989) and the AVEC/ABAW challenges. 1 means
    perfect agreement, 0 none, -1 perfect inverse agreement. Where the denominator is 0 (both
    constant and equal) the prediction is exactly right: 1. NaN for no values.
    """
    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if len(t) == 0:
        return float("nan")
    mean_t, mean_p = t.mean(), p.mean()
    covariance = ((t - mean_t) * (p - mean_p)).mean()
    denominator = t.var() + p.var() + (mean_t - mean_p) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else 1.0


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> pd.DataFrame:
    """A row per output: ccc, rmse, mae over its labelled (non-NaN) rows, and that count.

    An output with no labelled row has NaN metrics (``flat_regression`` leaves them out).
    """
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    rows = []
    for j in range(len(names)):
        keep = ~np.isnan(y_true[:, j])
        t, p = y_true[keep, j], y_pred[keep, j]
        error = p - t
        rows.append({"ccc": ccc(t, p), "rmse": float(np.sqrt(np.mean(error ** 2))) if len(t) else np.nan,
                     "mae": float(np.mean(np.abs(error))) if len(t) else np.nan, "labelled": int(keep.sum())})
    return pd.DataFrame(rows, index=pd.Index(names, name="output"))


def flat_regression(table: pd.DataFrame) -> dict[str, float]:
    """``ccc_valence``, ``rmse_AU12``, ... and their means (over outputs that have labelled rows)."""
    flat = {f"{metric}_{name}": float(table.at[name, metric]) for name in table.index
            for metric in REGRESSION_METRICS if not np.isnan(table.at[name, metric])}
    for metric in REGRESSION_METRICS:
        values = table[metric].dropna()
        if len(values):
            flat[f"{metric}_mean"] = float(values.mean())
    return flat


def emotion_classes(y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a usable emotion target (no NaN, some mass) and their class (the largest entry)."""
    y_true = np.asarray(y_true, dtype=float)
    usable = ~np.isnan(y_true).any(axis=1) & (np.nan_to_num(y_true).sum(axis=1) > 0)
    return usable, np.argmax(np.nan_to_num(y_true[usable], nan=-1.0), axis=1)


def emotion_metrics(y_true: np.ndarray, scores: np.ndarray, names: list[str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per class precision, recall, f1, support, predicted; flat accuracy, macro scores, per-class F1."""
    usable, truth = emotion_classes(y_true)
    predicted = np.argmax(np.asarray(scores, dtype=float)[usable], axis=1)
    classes = np.arange(len(names))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=classes, average=None, zero_division=0.0)
    table = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support,
                          "predicted": np.bincount(predicted, minlength=len(names))},
                         index=pd.Index(names, name="class"))
    macro = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0.0)
    flat = {"accuracy": float(accuracy_score(truth, predicted)),
            "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0.0)),
            "precision_macro": float(macro[0]), "recall_macro": float(macro[1])}
    flat.update({f"{metric}_{name}": float(table.at[name, metric]) for name in names
                 for metric in ("precision", "recall", "f1")})
    return table, flat
