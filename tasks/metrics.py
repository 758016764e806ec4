"""Per-AU detection metrics, and the matrices that show AU confusion.

FDR (false discovery rate) = FP / (TP + FP) = 1 - precision. Where an AU is never predicted,
precision and FDR have no value; both are reported as 0 (nothing was falsely discovered, and
scikit-learn's ``zero_division=0`` convention for precision), so no NaN reaches MLflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support


def binarize(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return (np.asarray(scores) >= threshold).astype(np.int64)


def per_au_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> pd.DataFrame:
    """A row per AU: precision, recall, f1, fdr, support (true positives' count) and predicted count."""
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


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Unweighted means over AUs (the thesis' 'mean F1' and 'mean FDR')."""
    return {f"{metric}_mean": float(table[metric].mean()) for metric in ("precision", "recall", "f1", "fdr")}


def flat_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Per-AU and mean figures as one flat mapping, e.g. ``f1_AU3`` and ``f1_mean``."""
    flat = {f"{metric}_{au}": float(table.at[au, metric]) for au in table.index
            for metric in ("precision", "recall", "f1", "fdr")}
    return {**flat, **summary(table)}


def cooccurrence(labels: np.ndarray) -> np.ndarray:
    """P(AU j active | AU i active) over a label matrix; rows of never-active AUs are 0."""
    active = binarize(labels).astype(float)
    counts = active.T @ active
    return np.divide(counts, np.diag(counts)[:, None], out=np.zeros_like(counts), where=np.diag(counts)[:, None] > 0)


def false_positive_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Among test images whose only true AU is i, the share in which AU j fires (j != i).

    The diagonal is set to 0: it is recall, shown elsewhere. Rows of AUs with no such image are 0.
    """
    y_true, y_pred = binarize(y_true), np.asarray(y_pred).astype(float)
    n = y_true.shape[1]
    matrix = np.zeros((n, n))
    single = y_true.sum(axis=1) == 1
    for i in range(n):
        rows = single & (y_true[:, i] == 1)
        if rows.any():
            matrix[i] = y_pred[rows].mean(axis=0)
    np.fill_diagonal(matrix, 0.0)
    return matrix
