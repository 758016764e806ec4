"""Metrics per label type, and the matrices that show AU confusion.

- AU presence: per-AU precision, recall, F1 and FDR (false discovery rate) = FP / (TP + FP) =
  1 - precision. Where an AU is never predicted, precision and FDR have no value; both are
  reported as 0 (nothing was falsely discovered, and scikit-learn's ``zero_division=0``
  convention for precision), so no NaN reaches MLflow. An AU with no positive is counted with
  F1 0 in the mean, as the thesis did.
- Emotion: the predicted class is the highest score, the true class the one-hot (or soft)
  target's highest entry; accuracy, macro F1 (scikit-learn: over the classes present in truth or
  prediction) and per-class precision / recall / F1.
- AU intensity and valence/arousal: per output CCC (Lin's concordance correlation coefficient),
  RMSE and MAE.

NaN in the truth means 'not labelled': such entries are left out, per column (per row for
emotions). ``evaluate_predictions`` is the one entry point for every label type.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, multilabel_confusion_matrix,
                             precision_recall_fscore_support)

from ausynth.models.au_classifier import LABEL_TYPES, check_label_type  # noqa: F401  (re-exported)
# The flat metrics that summarise a run of each label type (the comparison table's columns).
SUMMARY_METRICS = {
    "au_presence": ("f1_mean", "fdr_mean", "precision_mean", "recall_mean"),
    "au_intensity": ("ccc_mean", "rmse_mean", "mae_mean"),
    "emotion": ("accuracy", "f1_macro", "precision_macro", "recall_macro"),
    "valence_arousal": ("ccc_mean", "rmse_mean", "mae_mean"),
}
# The one flat metric to rank runs by (all of them: higher is better), and the per-output
# table's column that goes with it.
PRIMARY_METRIC = {"au_presence": "f1_mean", "au_intensity": "ccc_mean", "emotion": "f1_macro",
                  "valence_arousal": "ccc_mean"}
PER_OUTPUT_METRIC = {"au_presence": "f1", "au_intensity": "ccc", "emotion": "f1", "valence_arousal": "ccc"}
REGRESSION_METRICS = ("ccc", "rmse", "mae")


def binarize(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return (np.asarray(scores) >= threshold).astype(np.int64)


def per_au_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> pd.DataFrame:
    """A row per AU: precision, recall, f1, fdr, support (true positives' count) and predicted count.

    Truth is thresholded at 0.5 (soft labels); NaN truth entries are left out of their AU's counts.
    """
    if np.isnan(np.asarray(y_true, dtype=float)).any():
        return _per_au_metrics_masked(np.asarray(y_true, dtype=float), np.asarray(y_pred), names)
    y_true = binarize(y_true)
    y_pred = np.asarray(y_pred).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0.0
    )
    confusion = multilabel_confusion_matrix(y_true, y_pred)
    tp, fp = confusion[:, 1, 1], confusion[:, 0, 1]
    predicted = tp + fp
    fdr = np.divide(fp, predicted, out=np.zeros(len(names), dtype=float), where=predicted > 0)
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "fdr": fdr, "support": support, "predicted": predicted},
        index=pd.Index(names, name="au"),
    )


def _per_au_metrics_masked(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> pd.DataFrame:
    """``per_au_metrics`` from counts over each AU's labelled rows (same zero-division conventions)."""
    labelled = ~np.isnan(y_true)
    truth = (np.nan_to_num(y_true, nan=0.0) >= 0.5) & labelled
    pred = (np.asarray(y_pred).astype(np.int64) == 1) & labelled
    tp = (truth & pred).sum(axis=0)
    fp = (~truth & pred).sum(axis=0)
    fn = (truth & ~pred).sum(axis=0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(len(names), dtype=float), where=den > 0)

    return pd.DataFrame(
        {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn),
         "fdr": ratio(fp, tp + fp), "support": tp + fn, "predicted": tp + fp},
        index=pd.Index(names, name="au"),
    )


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Unweighted means over AUs (the thesis' 'mean F1' and 'mean FDR')."""
    return {f"{metric}_mean": float(table[metric].mean()) for metric in ("precision", "recall", "f1", "fdr")}


def flat_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Per-AU and mean figures as one flat mapping, e.g. ``f1_AU3`` and ``f1_mean``."""
    flat = {f"{metric}_{au}": float(table.at[au, metric]) for au in table.index
            for metric in ("precision", "recall", "f1", "fdr")}
    return {**flat, **summary(table)}


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


def predicted_labels(label_type: str, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions as label rows: AU presence 0/1, emotion one-hot of the top class, else the values."""
    check_label_type(label_type)
    scores = np.asarray(scores)
    if label_type == "au_presence":
        return binarize(scores, threshold)
    if label_type == "emotion":
        return np.eye(scores.shape[1], dtype=np.float32)[np.argmax(scores, axis=1)]
    return scores.astype(np.float32)


def evaluate_predictions(label_type: str, y_true: np.ndarray, scores: np.ndarray, names: list[str],
                         threshold: float = 0.5) -> tuple[pd.DataFrame, dict[str, float]]:
    """The per-output table and flat metrics that fit the label type.

    ``scores`` are what ``predict_proba`` returns (sigmoid scores, softmax probabilities or
    regression values); ``threshold`` applies to AU presence only. NaN truth is ignored per column
    (per row for emotions). Flat keys: AU presence ``f1_AU1 ... f1_mean, fdr_mean, ...``;
    emotion ``accuracy, f1_macro, precision_macro, recall_macro, f1_<column>, ...``; AU intensity
    and valence/arousal ``ccc_<column>, rmse_<column>, mae_<column>, ccc_mean, rmse_mean, mae_mean``.
    Each table has a ``labelled`` column: the rows whose truth was used.
    """
    check_label_type(label_type)
    y_true, scores = np.asarray(y_true, dtype=float), np.asarray(scores, dtype=float)
    if y_true.shape != scores.shape or y_true.ndim != 2 or y_true.shape[1] != len(names):
        raise ValueError(f"truth {y_true.shape}, scores {scores.shape} and {len(names)} names do not match")
    if not (~np.isnan(y_true)).any():
        raise ValueError(f"no labelled rows to evaluate ({len(y_true)} rows, all truth NaN)")
    if label_type == "au_presence":
        table = per_au_metrics(y_true, binarize(scores, threshold), names)
        flat = flat_metrics(table)
        table["labelled"] = (~np.isnan(y_true)).sum(axis=0)
        return table, flat
    if label_type == "emotion":
        usable, _ = emotion_classes(y_true)
        if not usable.any():
            raise ValueError("no row has a complete emotion label to evaluate")
        table, flat = emotion_metrics(y_true, scores, names)
        table["labelled"] = int(usable.sum())
        return table, flat
    table = regression_metrics(y_true, scores, names)
    return table, flat_regression(table)


def error_matrix(label_type: str, y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray | None:
    """The confusion picture of a label type: AU presence the false-positive matrix (see
    ``false_positive_matrix``); emotion the confusion matrix normalised per true class (row: true,
    column: predicted; rows of absent classes 0); none for continuous labels."""
    check_label_type(label_type)
    if label_type == "au_presence":
        return false_positive_matrix(y_true, binarize(scores, threshold))
    if label_type == "emotion":
        usable, truth = emotion_classes(y_true)
        n = np.asarray(scores).shape[1]
        counts = confusion_matrix(truth, np.argmax(np.asarray(scores)[usable], axis=1), labels=np.arange(n))
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros((n, n)), where=totals > 0)
    return None
