import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from ausynth.tasks import metrics

NAMES = ["AU1", "AU2", "AU3"]
NAN = float("nan")

# A hand-made case. AU1: 3 true, predicted on r0 r2 r4 -> TP 2, FP 1, FN 1.
# AU2: 2 true, predicted on r0 r1 r2 -> TP 2, FP 1, FN 0. AU3: never true, predicted once (r3).
# AU4: true once (r4), never predicted.
HAND_NAMES = ["AU1", "AU2", "AU3", "AU4"]
HAND_TRUE = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]])
HAND_PRED = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])


def hand_table():
    with pytest.warns(metrics.NotScorableWarning):
        return metrics.per_au_metrics(HAND_TRUE, HAND_PRED, HAND_NAMES)


def test_hand_made_case_per_au_values():
    table = hand_table()
    expected = {  # precision, recall, f1, fdr, support, predicted, scorable
        "AU1": (2 / 3, 2 / 3, 4 / 6, 1 / 3, 3, 3, True),
        "AU2": (2 / 3, 1.0, 4 / 5, 1 / 3, 2, 3, True),
        "AU3": (0.0, NAN, 0.0, 1.0, 0, 1, False),  # no positive: recall undefined
        "AU4": (NAN, 0.0, 0.0, NAN, 1, 0, True),  # never predicted: precision and FDR undefined
    }
    columns = ["precision", "recall", "f1", "fdr", "support", "predicted", "scorable"]
    for au, values in expected.items():
        got = [table.at[au, c] for c in columns]
        np.testing.assert_allclose(np.array(got[:6], dtype=float), np.array(values[:6], dtype=float), err_msg=au)
        assert bool(got[6]) is values[6], au


def test_hand_made_case_means_leave_out_what_cannot_be_scored():
    flat = metrics.flat_metrics(hand_table())
    # F1 and recall over the scorable AU1, AU2, AU4; precision and FDR over AU1 and AU2 (AU4 never fires)
    assert flat["f1_mean"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert flat["recall_mean"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert flat["precision_mean"] == pytest.approx(2 / 3)
    assert flat["fdr_mean"] == pytest.approx(1 / 3)
    assert (flat["n_scorable"], flat["n_not_scorable"], flat["n_not_predicted"]) == (3, 1, 1)
    # undefined per-AU values are not logged; defined ones of a non-scorable AU are
    assert "recall_AU3" not in flat and "precision_AU4" not in flat and "fdr_AU4" not in flat
    assert flat["fdr_AU3"] == 1 and flat["f1_AU4"] == 0
    assert all(math.isfinite(v) for v in flat.values())


def test_per_au_values_match_scikit_learn_with_nan_for_undefined_ratios():
    # scikit-learn's zero_division=np.nan is this module's convention: undefined is NaN
    table = hand_table()
    for column, score in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        expected = score(HAND_TRUE, HAND_PRED, average=None, zero_division=np.nan)
        np.testing.assert_allclose(table[column], expected, err_msg=column)


def test_means_match_scikit_learn_macro_averages_over_scorable_aus():
    rng = np.random.default_rng(0)
    y_true = (rng.random((60, 5)) < 0.3).astype(int)
    y_pred = (rng.random((60, 5)) < 0.3).astype(int)
    y_true[:, 1] = 0  # AU2: no positive at test
    y_pred[:, 3] = 0  # AU4: never predicted
    names = [f"AU{k}" for k in range(1, 6)]
    with pytest.warns(metrics.NotScorableWarning, match="AU2"):
        flat = metrics.flat_metrics(metrics.per_au_metrics(y_true, y_pred, names))
    scorable = [0, 2, 3, 4]
    t, p = y_true[:, scorable], y_pred[:, scorable]
    assert flat["f1_mean"] == pytest.approx(f1_score(t, p, average="macro"))
    assert flat["recall_mean"] == pytest.approx(recall_score(t, p, average="macro"))
    # zero_division=np.nan leaves the never-predicted AU4 out of scikit-learn's macro precision
    assert flat["precision_mean"] == pytest.approx(precision_score(t, p, average="macro", zero_division=np.nan))
    assert flat["n_not_predicted"] == 1


def test_all_scorable_case_equals_scikit_learn_defaults():
    rng = np.random.default_rng(3)
    y_true = (rng.random((200, 3)) < 0.3).astype(int)
    y_pred = (rng.random((200, 3)) < 0.3).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every AU has positives: no warning
        table = metrics.per_au_metrics(y_true, y_pred, NAMES)
    np.testing.assert_allclose(table["f1"], f1_score(y_true, y_pred, average=None))
    np.testing.assert_allclose(table["precision"], precision_score(y_true, y_pred, average=None))
    np.testing.assert_allclose(table["recall"], recall_score(y_true, y_pred, average=None))
    assert metrics.summary(table)["f1_mean"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics.not_scorable(table) == []


def test_fdr_mean_plus_precision_mean_is_exactly_one():
    rng = np.random.default_rng(4)
    for _ in range(200):
        y_true = (rng.random((30, 6)) < rng.uniform(0.05, 0.5)).astype(int)
        y_pred = (rng.random((30, 6)) < rng.uniform(0.0, 0.5)).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.NotScorableWarning)
            table = metrics.per_au_metrics(y_true, y_pred, [f"AU{k}" for k in range(6)])
        means = metrics.summary(table)
        if math.isnan(means["precision_mean"]):
            continue
        assert means["fdr_mean"] + means["precision_mean"] == 1.0
        used = table["scorable"] & (table["predicted"] > 0)
        assert means["fdr_mean"] == pytest.approx(table.loc[used, "fdr"].mean(), abs=1e-12)


def test_untrainable_aus_are_left_out_and_named():
    train = np.array([[1, 0, 1], [0, 0, 1], [1, np.nan, 0]])
    assert metrics.untrainable_aus(train, NAMES) == ["AU2"]
    y_true = np.array([[1, 1, 0], [0, 0, 1]])
    y_pred = np.array([[1, 0, 0], [0, 0, 1]])  # AU2 missed: F1 0, but it could not be learnt
    with pytest.warns(metrics.NotScorableWarning, match=r"AU2 \(no positive in the training labels\)"):
        table = metrics.per_au_metrics(y_true, y_pred, NAMES, untrainable=["AU2"])
    assert metrics.not_scorable(table) == ["AU2"]
    assert metrics.summary(table)["f1_mean"] == 1.0
    with pytest.raises(ValueError, match="AU9"):
        metrics.per_au_metrics(y_true, y_pred, NAMES, untrainable=["AU9"])


def test_no_scorable_au_gives_nan_means():
    with pytest.warns(metrics.NotScorableWarning, match="3 of 3 AUs"):
        table = metrics.per_au_metrics(np.zeros((2, 3)), np.zeros((2, 3)), NAMES)
    assert all(math.isnan(v) for v in metrics.summary(table).values())


def test_unlabelled_truth_entries_are_left_out_per_au():
    y_true = np.array([[1, 0], [np.nan, 1], [0, np.nan], [1, 1]])
    y_pred = np.array([[1, 1], [1, 1], [1, 1], [0, 1]])
    table = metrics.per_au_metrics(y_true, y_pred, ["AU1", "AU2"])
    # AU1 over r0 r2 r3: TP 1 (r0), FP 1 (r2), FN 1 (r3); AU2 over r0 r1 r3: TP 2, FP 1
    assert (table.at["AU1", "precision"], table.at["AU1", "recall"]) == (0.5, 0.5)
    assert (table.at["AU2", "precision"], table.at["AU2", "recall"]) == (pytest.approx(2 / 3), 1.0)
    assert list(table["support"]) == [2, 2] and list(table["predicted"]) == [2, 3]


def test_soft_targets_are_thresholded_at_one_half():
    with pytest.warns(metrics.NotScorableWarning, match="AU2"):
        table = metrics.per_au_metrics(np.array([[0.7, 0.2, 0.5]]), np.array([[1, 0, 0]]), NAMES)
    assert table.at["AU1", "f1"] == 1
    assert not table.at["AU2", "scorable"] and table.at["AU3", "support"] == 1  # 0.2 absent, 0.5 present


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
