import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from ausynth.tasks import metrics

NAMES = ["AU1", "AU2", "AU3"]


def test_per_au_metrics_match_scikit_learn_on_random_cases():
    rng = np.random.default_rng(0)
    y_true = (rng.random((200, 3)) < 0.3).astype(int)
    y_pred = (rng.random((200, 3)) < 0.3).astype(int)
    table = metrics.per_au_metrics(y_true, y_pred, NAMES)
    np.testing.assert_allclose(table["f1"], f1_score(y_true, y_pred, average=None))
    np.testing.assert_allclose(table["precision"], precision_score(y_true, y_pred, average=None))
    np.testing.assert_allclose(table["recall"], recall_score(y_true, y_pred, average=None))
    np.testing.assert_allclose(table["fdr"], 1 - table["precision"])
    assert metrics.summary(table)["f1_mean"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_hand_made_case_with_known_fdr():
    y_true = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    y_pred = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]])
    table = metrics.per_au_metrics(y_true, y_pred, NAMES)
    assert table.at["AU1", "fdr"] == pytest.approx(1 / 3)  # 2 TP, 1 FP
    assert table.at["AU2", "fdr"] == pytest.approx(1 / 2)  # 1 TP, 1 FP
    assert table.at["AU2", "recall"] == pytest.approx(1 / 2)
    assert list(table["support"]) == [2, 2, 0]


def test_au_without_positives_or_predictions_gives_zeros_not_nan():
    y_true = np.array([[1, 0, 0], [0, 0, 0]])
    y_pred = np.array([[1, 0, 0], [0, 0, 1]])
    flat = metrics.flat_metrics(metrics.per_au_metrics(y_true, y_pred, NAMES))
    assert all(math.isfinite(v) for v in flat.values())
    assert flat["f1_AU2"] == 0 and flat["fdr_AU2"] == 0  # never true, never predicted
    assert flat["fdr_AU3"] == 1  # predicted once, never true


def test_soft_targets_are_thresholded_at_one_half():
    table = metrics.per_au_metrics(np.array([[0.7, 0.2, 0.0]]), np.array([[1, 0, 0]]), NAMES)
    assert table.at["AU1", "f1"] == 1


def test_false_positive_matrix_counts_other_aus_firing_on_single_au_images():
    y_true = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    y_pred = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [1, 1, 1]])
    matrix = metrics.false_positive_matrix(y_true, y_pred)
    np.testing.assert_allclose(matrix[0], [0, 0.5, 0.5])  # the two-AU row is not counted
    np.testing.assert_allclose(matrix[1], [0, 0, 0])
    np.testing.assert_allclose(matrix[2], [0, 0, 0])  # no image with only AU3


def test_cooccurrence_is_conditional_on_the_row():
    labels = np.array([[1, 1], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(metrics.cooccurrence(labels), [[1, 0.5], [1 / 3, 1]])
