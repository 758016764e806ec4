"""Label types: everything that depends on what a dataset's labels are, in one object per type.

A dataset's labels are AU presence (0/1 per AU), AU intensity (0..1 per AU, FACS 0-5 scaled),
an emotion category (one-hot ``emotion_<class>`` columns) or valence/arousal (-1..1). The type
decides the classifier head's activation, its loss, how predictions become hard labels (for
pseudo-labelling), how sure a prediction is, how it is scored, and what error matrix shows its
confusions. Stages ask the registry (``label_type(name)`` or ``of(imageset)``) and never branch
on the type's name themselves, so a new label type is one class here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix
from torch import nn

from ausynth.tasks import metrics, statistics
from ausynth.tasks.errors import ConfigError
from ausynth.tasks.imageset import ImageSet

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FACS_SCALE = 5.0  # intensities are stored on 0..1; OpenFace writes them on FACS' 0-5


def openface_au(column: str) -> str:
    """``AU1`` -> ``AU01``: OpenFace's two-digit AU names."""
    match = re.fullmatch(r"AU0*(\d+)", column)
    return f"AU{int(match.group(1)):02d}" if match else column


def _masked_mean(elementwise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the labelled entries; 0 (with a gradient path) when none is labelled."""
    mask = mask.to(elementwise.dtype)
    return (elementwise * mask).sum() / mask.sum().clamp_min(1.0)


def _pointwise_loss(kind: str, squash: Callable[[torch.Tensor], torch.Tensor]) -> LossFn:
    """MSE between squashed outputs and targets (the thesis), or BCE on the logits; NaN targets masked."""
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = ~torch.isnan(target)
        target = torch.where(labelled, target, torch.zeros_like(target))
        if kind == "mse":
            elementwise = (squash(logits) - target) ** 2
        else:
            elementwise = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return _masked_mean(elementwise, labelled)
    return loss


def _concordance_loss(squash: Callable[[torch.Tensor], torch.Tensor]) -> LossFn:
    """1 - CCC per output over the batch's labelled rows, averaged over outputs: it optimises the
    metric a regression is judged by (``metrics.ccc``, population moments), where MSE favours
    predicting the mean. An output with fewer than two labelled rows in the batch is left out."""
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = (~torch.isnan(target)).to(logits.dtype)
        count = labelled.sum(dim=0)
        pred, target = squash(logits) * labelled, torch.nan_to_num(target) * labelled
        mean_p, mean_t = pred.sum(0) / count.clamp_min(1), target.sum(0) / count.clamp_min(1)
        centred_p, centred_t = (pred - mean_p) * labelled, (target - mean_t) * labelled
        covariance = (centred_p * centred_t).sum(0) / count.clamp_min(1)
        spread = ((centred_p ** 2).sum(0) + (centred_t ** 2).sum(0)) / count.clamp_min(1) + (mean_p - mean_t) ** 2
        ccc = 2 * covariance / spread.clamp_min(1e-8)
        return _masked_mean(1 - ccc, count >= 2)
    return loss


class LabelType:
    """The AU-presence behaviour; other types override what differs."""

    name: ClassVar[str] = "au_presence"
    summary_metrics: ClassVar[tuple[str, ...]] = ("f1_mean", "fdr_mean", "precision_mean", "recall_mean")
    primary_metric: ClassVar[str] = "f1_mean"  # ranks runs; higher is better
    per_output_metric: ClassVar[str] = "f1"
    validation_scores: ClassVar[dict[str, str]] = {"val_f1": "f1_mean"}  # history key -> flat metric
    per_au: ClassVar[bool] = True  # one label per AU: AU-isolated generation and relative AUs apply

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def loss(self, kind: str) -> LossFn:
        """``kind`` is ``classifier.loss``: 'mse' on the sigmoid or 'bce' on the logits; 'ccc' is for regressions."""
        if kind == "ccc":
            raise ConfigError(f"classifier.loss 'ccc' (1 - CCC) is a regression loss, for au_intensity or "
                              f"valence_arousal labels; these are {self.name}: use 'bce' or 'mse'")
        return _pointwise_loss(kind, torch.sigmoid)

    def hard_labels(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        """Predictions as label rows, the way a pseudo-label is stored."""
        return metrics.binarize(scores, threshold).astype(np.float32)

    def confidence(self, scores: np.ndarray) -> np.ndarray:
        """Per image, the least sure AU's max(p, 1 - p): one unsure AU makes the image unsure."""
        return np.maximum(scores, 1.0 - scores).min(axis=1)

    def present(self, values: np.ndarray) -> np.ndarray:
        """Which label entries count as 'shown' (NaN counts as absent)."""
        return np.nan_to_num(values, nan=0.0) >= 0.5

    def evaluate(self, y_true: np.ndarray, scores: np.ndarray, names: list[str], threshold: float,
                 train_labels: np.ndarray | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
        """Per-AU table and flat metrics; with the training labels, AUs never positive in training are
        left out of the means, and the most co-occurring training pairs get their confusion figures
        (``fp/AU2-to-AU3``, ``pair_fdr/AU2-AU3``)."""
        predicted = metrics.binarize(scores, threshold)
        untrainable = metrics.untrainable_aus(train_labels, names) if train_labels is not None else None
        table = metrics.per_au_metrics(y_true, predicted, names, untrainable)
        flat = metrics.flat_metrics(table)
        if train_labels is not None:
            flat |= statistics.pair_metrics(y_true, predicted, names, statistics.top_cooccurring_pairs(train_labels,
                                                                                                      names))
        table["labelled"] = (~np.isnan(y_true)).sum(axis=0)
        return table, flat

    def error_matrix(self, y_true: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray | None:
        """P(column fires | only the row's AU is true) on the test set."""
        return metrics.false_positive_matrix(y_true, metrics.binarize(scores, threshold))

    def output_columns(self, scores: np.ndarray, names: list[str], threshold: float) -> pd.DataFrame:
        """Predictions as ``ausynth predict`` writes them, after OpenFace: ``AU01_c`` presence (0/1 at
        ``threshold``) and ``AU01_p`` its probability (not ``_r``: OpenFace's ``_r`` is a 0-5 intensity)."""
        aus = [openface_au(name) for name in names]
        return pd.concat([pd.DataFrame(scores, columns=[f"{au}_p" for au in aus]),
                          pd.DataFrame(metrics.binarize(scores, threshold), columns=[f"{au}_c" for au in aus])], axis=1)


class AUIntensity(LabelType):
    name: ClassVar[str] = "au_intensity"
    summary_metrics: ClassVar[tuple[str, ...]] = ("ccc_mean", "rmse_mean", "mae_mean")
    primary_metric: ClassVar[str] = "ccc_mean"
    per_output_metric: ClassVar[str] = "ccc"
    validation_scores: ClassVar[dict[str, str]] = {"val_ccc": "ccc_mean", "val_rmse": "rmse_mean"}
    present_from: ClassVar[float] = 0.4  # 2 on FACS' 0-5 scale, DISFA's convention

    def loss(self, kind: str) -> LossFn:
        return _concordance_loss(torch.sigmoid) if kind == "ccc" else super().loss(kind)

    def hard_labels(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        return scores.astype(np.float32)

    def present(self, values: np.ndarray) -> np.ndarray:
        return np.nan_to_num(values, nan=0.0) >= self.present_from

    def evaluate(self, y_true, scores, names, threshold, train_labels=None):
        table = metrics.regression_metrics(y_true, scores, names)
        return table, metrics.flat_regression(table)

    def error_matrix(self, y_true, scores, threshold):
        return None

    def output_columns(self, scores, names, threshold):
        """OpenFace's ``AU01_r`` (intensity on FACS' 0-5) and ``AU01_c`` (present: ``present_from`` or more)."""
        aus = [openface_au(name) for name in names]
        return pd.concat([pd.DataFrame(FACS_SCALE * scores, columns=[f"{au}_r" for au in aus]),
                          pd.DataFrame(self.present(scores).astype(int), columns=[f"{au}_c" for au in aus])], axis=1)


class Emotion(LabelType):
    name: ClassVar[str] = "emotion"
    summary_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
    primary_metric: ClassVar[str] = "f1_macro"
    validation_scores: ClassVar[dict[str, str]] = {"val_accuracy": "accuracy", "val_f1": "f1_macro"}
    per_au: ClassVar[bool] = False

    def activate(self, logits):
        return torch.softmax(logits, dim=1)

    def loss(self, kind: str) -> LossFn:
        """Cross-entropy against one-hot or soft rows, whatever ``kind`` says; rows with NaN or no mass skipped."""
        def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            usable = ~torch.isnan(target).any(dim=1)
            target = torch.nan_to_num(target, nan=0.0).clamp_min(0.0)
            mass = target.sum(dim=1)
            usable &= mass > 0
            target = target / mass.clamp_min(1e-12)[:, None]
            return _masked_mean(-(target * torch.log_softmax(logits, dim=1)).sum(dim=1), usable)
        return soft_cross_entropy

    def hard_labels(self, scores, threshold):
        return np.eye(scores.shape[1], dtype=np.float32)[np.argmax(scores, axis=1)]

    def confidence(self, scores):
        return scores.max(axis=1)

    def evaluate(self, y_true, scores, names, threshold, train_labels=None):
        usable, _ = metrics.emotion_classes(y_true)
        if not usable.any():
            raise ValueError("no row has a complete emotion label to evaluate")
        table, flat = metrics.emotion_metrics(y_true, scores, names)
        table["labelled"] = int(usable.sum())
        return table, flat

    def error_matrix(self, y_true, scores, threshold):
        """The confusion matrix normalised per true class (row: true, column: predicted)."""
        usable, truth = metrics.emotion_classes(y_true)
        n = np.asarray(scores).shape[1]
        counts = confusion_matrix(truth, np.argmax(np.asarray(scores)[usable], axis=1), labels=np.arange(n))
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros((n, n)), where=totals > 0)

    def output_columns(self, scores, names, threshold):
        """``emotion``, the most probable class, and each class's probability under its label column's name."""
        classes = np.array([name.removeprefix("emotion_") for name in names])
        return pd.concat([pd.DataFrame({"emotion": classes[np.argmax(scores, axis=1)]}),
                          pd.DataFrame(scores, columns=names)], axis=1)


class ValenceArousal(AUIntensity):
    name: ClassVar[str] = "valence_arousal"
    per_au: ClassVar[bool] = False

    def activate(self, logits):
        return torch.tanh(logits)

    def output_columns(self, scores, names, threshold):
        """``valence`` and ``arousal`` on [-1, 1]."""
        return pd.DataFrame(scores, columns=names)

    def loss(self, kind: str) -> LossFn:
        """1 - CCC for 'ccc', else MSE: BCE has no meaning on [-1, 1]."""
        return _concordance_loss(torch.tanh) if kind == "ccc" else _pointwise_loss("mse", torch.tanh)


LABEL_TYPES: dict[str, LabelType] = {t.name: t for t in (LabelType(), AUIntensity(), Emotion(), ValenceArousal())}


def label_type(name: str) -> LabelType:
    try:
        return LABEL_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown label type {name!r}: use one of {list(LABEL_TYPES)}") from None


def implied_by(columns: list[str]) -> str:
    """The label type column names imply: ``emotion_*``, ``valence``/``arousal``, else AU presence
    (names cannot tell presence from intensity)."""
    if columns and all(c.startswith("emotion_") for c in columns):
        return "emotion"
    if columns and set(columns) <= {"valence", "arousal"}:
        return "valence_arousal"
    return "au_presence"


def of(imageset: ImageSet, given: str | None = None) -> LabelType:
    """``given`` if set, else the set's ``meta["label_type"]``, else what its columns imply; an error
    when it contradicts the columns (e.g. emotion columns trained as AUs)."""
    chosen = label_type(given or imageset.meta.get("label_type") or implied_by(imageset.label_columns))
    implied = label_type(implied_by(imageset.label_columns))
    if not (chosen.per_au and implied.per_au) and chosen is not implied:
        raise ValueError(f"label type {chosen.name!r} does not fit the label columns {imageset.label_columns} "
                         f"(they look like {implied.name!r})")
    return chosen
