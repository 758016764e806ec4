"""Label types (tasks/label_types.py) through the classifier (head, loss, predictions) and their metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from ausynth.configs.schema import ClassifierConfig
from ausynth.models.au_classifier import AUClassifier
from ausynth.tasks import label_types, metrics
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.label_types import LABEL_TYPES, label_type
from ausynth.tasks.train_classifier import predict_proba, train_classifier

CPU = torch.device("cpu")
EMOTIONS = ["emotion_anger", "emotion_happiness", "emotion_neutral"]


# ----------------------------------------------------------------------------- CCC and regression metrics

def test_ccc_matches_a_hand_computation():
    # t = 1 2 3 4: mean 2.5, population variance 1.25; p = 2 3 3 5: mean 3.25, variance 1.1875;
    # covariance (1.875 + 0.125 - 0.125 + 2.625) / 4 = 1.125; CCC = 2.25 / (1.25 + 1.1875 + 0.75^2) = 0.75
    assert metrics.ccc([1, 2, 3, 4], [2, 3, 3, 5]) == pytest.approx(0.75)


def test_ccc_limits_and_its_relation_to_pearson():
    t = np.array([0.1, -0.4, 0.8, 0.3, -0.9])
    assert metrics.ccc(t, t) == pytest.approx(1.0)
    assert metrics.ccc(t - t.mean(), -(t - t.mean())) == pytest.approx(-1.0)
    assert metrics.ccc(t, t + 0.5) < 1.0  # a bias is penalised, unlike Pearson's r
    shuffled = t[[2, 0, 4, 1, 3]]  # same mean and variance: CCC equals Pearson's r
    assert metrics.ccc(t, shuffled) == pytest.approx(np.corrcoef(t, shuffled)[0, 1])
    assert metrics.ccc([0.5, 0.5], [0.5, 0.5]) == 1.0  # constant and exactly right
    assert metrics.ccc([0.5, 0.5], [0.2, 0.2]) == 0.0
    assert math.isnan(metrics.ccc([], []))


def test_regression_metrics_ignore_nan_truth_per_column():
    y_true = np.array([[0.5, np.nan], [-0.5, 0.2], [np.nan, 0.4], [0.0, np.nan]])
    y_pred = np.array([[0.4, 9.0], [-0.3, 0.2], [9.0, 0.1], [0.3, 9.0]])
    table, flat = label_type("valence_arousal").evaluate(y_true, y_pred, ["valence", "arousal"], 0.5)
    assert list(table["labelled"]) == [3, 2]
    assert table.at["valence", "rmse"] == pytest.approx(math.sqrt((0.01 + 0.04 + 0.09) / 3))
    assert table.at["valence", "mae"] == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert table.at["arousal", "mae"] == pytest.approx(0.15)
    assert flat["ccc_valence"] == pytest.approx(metrics.ccc([0.5, -0.5, 0.0], [0.4, -0.3, 0.3]))
    assert flat["rmse_mean"] == pytest.approx(table["rmse"].mean())
    assert set(flat) == {f"{m}_{c}" for m in ("ccc", "rmse", "mae") for c in ("valence", "arousal", "mean")}


def test_regression_output_without_labels_is_left_out_of_the_flat_metrics():
    y_true = np.array([[0.2, np.nan], [0.6, np.nan]])
    table, flat = label_type("au_intensity").evaluate(y_true, np.array([[0.2, 0.1], [0.5, 0.3]]), ["AU6", "AU12"],
                                                       0.5)
    assert table.at["AU12", "labelled"] == 0 and math.isnan(table.at["AU12", "ccc"])
    assert "ccc_AU12" not in flat and flat["ccc_mean"] == flat["ccc_AU6"]
    assert all(math.isfinite(v) for v in flat.values())


# ----------------------------------------------------------------------------- emotions

def test_emotion_metrics_match_scikit_learn_and_skip_unlabelled_rows():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 60)
    y_true = np.eye(3)[truth]
    y_true[:5] = np.nan  # unlabelled rows
    y_true[5] = [0.2, 0.7, 0.1]  # a soft target: its class is the largest entry
    truth[5] = 1
    scores = rng.random((60, 3))
    scores /= scores.sum(axis=1, keepdims=True)
    table, flat = label_type("emotion").evaluate(y_true, scores, EMOTIONS, 0.5)
    t, p = truth[5:], scores[5:].argmax(axis=1)
    assert flat["accuracy"] == pytest.approx(accuracy_score(t, p))
    assert flat["f1_macro"] == pytest.approx(f1_score(t, p, average="macro"))
    np.testing.assert_allclose(table["f1"], f1_score(t, p, average=None, labels=[0, 1, 2]))
    assert flat["f1_emotion_happiness"] == pytest.approx(table.at["emotion_happiness", "f1"])
    assert table["support"].sum() == 55 and (table["labelled"] == 55).all()


def test_emotion_confusion_matrix_is_normalised_per_true_class():
    y_true = np.eye(3)[[0, 0, 1, 1]]
    scores = np.eye(3)[[0, 1, 1, 1]]
    matrix = label_type("emotion").error_matrix(y_true, scores, 0.5)
    np.testing.assert_allclose(matrix, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(label_type("emotion").hard_labels(np.array([[0.2, 0.5, 0.3]]), 0.9), [[0, 1, 0]])
    with pytest.raises(ValueError, match="no row has a complete emotion label"):
        label_type("emotion").evaluate(np.full((2, 3), np.nan), scores[:2], EMOTIONS, 0.5)


# ----------------------------------------------------------------------------- AU presence with gaps

def test_au_presence_is_scored_at_the_classifiers_threshold_on_labelled_entries():
    """Hand-counted: AU1 truth 1 1 0 0 NaN, AU2 truth 1 0 1 NaN 1; scores thresholded at 0.6, not 0.5."""
    nan = np.nan
    y_true = np.array([[1, 1], [1, 0], [0, 1], [0, nan], [nan, 1]], dtype=float)
    scores = np.array([[0.7, 0.55], [0.55, 0.9], [0.65, 0.7], [0.1, 0.9], [0.9, 0.1]])
    table, flat = label_type("au_presence").evaluate(y_true, scores, ["AU1", "AU2"], 0.6)
    # AU1 (rows 0-3): predicted 1 0 1 0 -> tp 1, fp 1, fn 1; AU2 (rows 0-2, 4): predicted 0 1 1 0 -> tp 1, fp 1, fn 2
    assert table.loc["AU1", ["precision", "recall", "f1"]].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert table.loc["AU2", ["precision", "recall", "f1"]].tolist() == pytest.approx([0.5, 1 / 3, 0.4])
    assert table.loc["AU1", "fdr"] == pytest.approx(0.5)
    assert table["support"].tolist() == [2, 3] and table["labelled"].tolist() == [4, 4]
    assert flat["f1_AU2"] == pytest.approx(0.4) and flat["f1_mean"] == pytest.approx(0.45)
    assert flat["recall_mean"] == pytest.approx((0.5 + 1 / 3) / 2)
    at_half, _ = label_type("au_presence").evaluate(y_true, scores, ["AU1", "AU2"], 0.5)
    assert at_half.loc["AU1", "recall"] == 1.0  # 0.55 counts at 0.5: the threshold is really applied


def test_each_label_type_names_its_metrics_and_output():
    assert set(LABEL_TYPES) == {"au_presence", "au_intensity", "emotion", "valence_arousal"}
    for name, kind in LABEL_TYPES.items():
        assert kind.name == name and kind.primary_metric in kind.summary_metrics
    assert [label_type(n).per_output_metric for n in LABEL_TYPES] == ["f1", "ccc", "f1", "ccc"]
    with pytest.raises(ValueError, match="unknown label type 'emotions'"):
        label_type("emotions")


def test_hard_labels_confidence_and_presence_per_label_type():
    scores = np.array([[0.9, 0.2, 0.55], [0.6, 0.3, 0.1]], dtype=np.float32)
    au = label_type("au_presence")
    np.testing.assert_array_equal(au.hard_labels(scores, 0.5), [[1, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(au.hard_labels(scores, 0.58), [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(au.confidence(scores), [0.55, 0.6])  # the least sure AU decides
    np.testing.assert_array_equal(au.present(np.array([[0.5, np.nan, 0.4]])), [[True, False, False]])
    intensity = label_type("au_intensity")
    np.testing.assert_array_equal(intensity.hard_labels(scores, 0.5), scores)  # intensities stay graded
    np.testing.assert_array_equal(intensity.present(np.array([[0.4, 0.39]])), [[True, False]])
    assert intensity.error_matrix(scores, scores, 0.5) is None
    emotion = label_type("emotion")
    np.testing.assert_allclose(emotion.confidence(scores), [0.9, 0.6])


def test_partially_labelled_aus_are_scored_on_their_labelled_rows_only():
    rng = np.random.default_rng(2)
    y_true = (rng.random((80, 3)) < 0.4).astype(float)
    y_pred = (rng.random((80, 3)) < 0.4).astype(int)
    y_true[rng.random((80, 3)) < 0.3] = np.nan
    table = metrics.per_au_metrics(y_true, y_pred, ["AU1", "AU2", "AU3"])
    for j, au in enumerate(["AU1", "AU2", "AU3"]):
        keep = ~np.isnan(y_true[:, j])
        p, r, f, s = precision_recall_fscore_support(y_true[keep, j], y_pred[keep, j], average="binary",
                                                     zero_division=0.0)
        assert (table.at[au, "precision"], table.at[au, "recall"], table.at[au, "f1"]) == pytest.approx((p, r, f))
        assert table.at[au, "fdr"] == pytest.approx(1 - p)


def test_unlabelled_entries_do_not_count_as_absent_in_matrices():
    labels = np.array([[1, 1], [1, np.nan], [0, 1]])
    # P(AU2 | AU1) over rows where AU1 is active and AU2 labelled: 1 of 1
    np.testing.assert_allclose(metrics.cooccurrence(labels), [[1, 1], [0.5, 1]])
    y_true = np.array([[1, 0], [1, np.nan]])
    y_pred = np.array([[1, 0], [1, 1]])
    np.testing.assert_allclose(metrics.false_positive_matrix(y_true, y_pred), [[0, 0], [0, 0]])


# ----------------------------------------------------------------------------- losses and heads

def test_losses_mask_nan_targets():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    labelled = ~torch.isnan(target)
    au = label_type("au_presence")
    for kind in ("mse", "bce"):
        loss = au.loss(kind)(logits, target)
        full = au.loss(kind)(logits[labelled][None], target[labelled][None])
        assert loss.item() == pytest.approx(full.item())
        loss.backward()
        assert torch.isfinite(logits.grad).all() and logits.grad[0, 1] == 0
        logits.grad = None
    complete = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert au.loss("mse")(logits, complete).item() == pytest.approx(
        torch.nn.functional.mse_loss(torch.sigmoid(logits), complete).item())
    assert au.loss("bce")(logits, complete).item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, complete).item())
    va = label_type("valence_arousal").loss("bce")(logits, target)  # a regression: always MSE on tanh
    assert va.item() == pytest.approx(((torch.tanh(logits) - target)[labelled] ** 2).mean().item())
    assert au.loss("mse")(logits, torch.full((2, 2), float("nan"))).item() == 0.0


def test_emotion_loss_is_cross_entropy_with_one_hot_or_soft_targets():
    logits = torch.tensor([[1.0, 0.2, -0.5], [0.0, 0.3, 0.1], [0.5, 0.5, 0.5]])
    loss = label_type("emotion").loss("mse")  # cfg.loss does not apply to emotions
    onehot = torch.eye(3)[[0, 2, 1]]
    assert loss(logits, onehot).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2, 1])).item())
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    assert loss(logits, soft).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, soft).item())
    with_gap = torch.cat([onehot[:2], torch.full((1, 3), float("nan"))])
    assert loss(logits, with_gap).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:2], torch.tensor([0, 2])).item())


def test_heads_give_the_right_kind_of_output():
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1), dtype=np.uint8)
    emotion = predict_proba(AUClassifier(3, 1, width=4, label_type="emotion"), images, CPU)
    np.testing.assert_allclose(emotion.sum(axis=1), 1.0, rtol=1e-5)
    va = predict_proba(AUClassifier(2, 1, width=4, label_type="valence_arousal"), images, CPU)
    assert (np.abs(va) <= 1).all()
    au = AUClassifier(3, 1, width=4)
    assert au.label_type == "au_presence"
    np.testing.assert_allclose(predict_proba(au, images, CPU),
                               predict_proba(au, images, CPU, label_type="au_intensity"))
    with pytest.raises(ValueError, match="unknown label type"):
        predict_proba(au, images, CPU, label_type="emotions")
    with pytest.raises(ValueError, match="at least two classes"):
        AUClassifier(1, 1, label_type="emotion")


def _set(labels: np.ndarray, columns: list[str], images: np.ndarray, label_type: str | None) -> ImageSet:
    frame = pd.DataFrame(labels, columns=columns)
    frame.insert(0, "subject", "s")
    return ImageSet(images, frame, columns, {"label_type": label_type} if label_type else {})


def test_label_type_comes_from_meta_or_columns_and_must_fit_them():
    images = np.zeros((2, 8, 8, 1), np.uint8)
    emotion = _set(np.eye(3)[[0, 1]], EMOTIONS, images, None)
    assert label_types.of(emotion).name == "emotion"
    assert label_types.of(_set(np.zeros((2, 2)), ["valence", "arousal"], images, None)).name == "valence_arousal"
    assert label_types.of(_set(np.zeros((2, 2)), ["AU1", "AU2"], images, "au_intensity")).name == "au_intensity"
    assert label_types.of(_set(np.zeros((2, 2)), ["AU1", "AU2"], images, None)).name == "au_presence"
    assert label_types.of(_set(np.zeros((2, 2)), ["AU1", "AU2"], images, None), "au_intensity").name == "au_intensity"
    with pytest.raises(ValueError, match="does not fit"):
        label_types.of(emotion, "au_presence")


# ----------------------------------------------------------------------------- tiny training runs

def _squares(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """32x32 images with a bright square in one of 3 places (the class) and a brightness level."""
    cls = rng.integers(0, 3, n)
    level = rng.uniform(0.2, 1.0, n)
    images = np.zeros((n, 32, 32, 1), np.uint8)
    for i, (c, v) in enumerate(zip(cls, level)):
        images[i, 4:14, 2 + 10 * c:10 + 10 * c, 0] = int(255 * v)
    return images, np.stack([cls, level], axis=1)


CFG = ClassifierConfig(max_epochs=8, patience=8, width=8, lr=0.01, batch_size=32)


@pytest.fixture(scope="module")
def squares():
    rng = np.random.default_rng(0)
    return _squares(160, rng), _squares(60, rng)


def test_emotion_training_learns_the_classes(squares):
    (images, info), (val_images, val_info) = squares
    train = _set(np.eye(3)[info[:, 0].astype(int)], EMOTIONS, images, "emotion")
    train.frame.loc[:9, EMOTIONS] = np.nan  # unlabelled rows are skipped by the loss
    val = _set(np.eye(3)[val_info[:, 0].astype(int)], EMOTIONS, val_images, "emotion")
    trained = train_classifier(train, val, CFG, 0, CPU)
    assert trained.model.label_type == "emotion"
    assert {"val_loss", "val_accuracy", "val_f1"} <= set(trained.history[0])
    assert max(r["val_accuracy"] for r in trained.history) > 0.8
    probs = predict_proba(trained.model, val_images, CPU)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    _, flat = label_type("emotion").evaluate(val.labels, probs, EMOTIONS, 0.5)
    assert flat["accuracy"] > 0.8


def test_valence_arousal_and_intensity_training_run_with_partial_labels(squares):
    (images, info), (val_images, val_info) = squares
    targets = np.stack([2 * info[:, 1] - 1, info[:, 0] - 1], axis=1)  # valence from brightness, arousal from place
    targets[::4, 1] = np.nan  # some rows lack arousal
    val_targets = np.stack([2 * val_info[:, 1] - 1, val_info[:, 0] - 1], axis=1)
    trained = train_classifier(_set(targets, ["valence", "arousal"], images, None),
                               _set(val_targets, ["valence", "arousal"], val_images, None), CFG, 0, CPU)
    assert trained.model.label_type == "valence_arousal"
    assert all(math.isfinite(r["train_loss"]) for r in trained.history)
    assert max(r["val_ccc"] for r in trained.history) > 0.5
    values = predict_proba(trained.model, val_images, CPU)
    assert values.min() >= -1 and values.max() <= 1 and values.min() < 0

    intensity = np.stack([info[:, 1], (info[:, 0] == 1) * info[:, 1]], axis=1)
    intensity[::3, 0] = np.nan
    val_intensity = np.stack([val_info[:, 1], (val_info[:, 0] == 1) * val_info[:, 1]], axis=1)
    short = CFG.model_copy(update={"max_epochs": 3})
    trained = train_classifier(_set(intensity, ["AU6", "AU12"], images, "au_intensity"),
                               _set(val_intensity, ["AU6", "AU12"], val_images, "au_intensity"), short, 0, CPU)
    assert trained.model.label_type == "au_intensity" and {"val_ccc", "val_rmse"} <= set(trained.history[-1])
    assert all(math.isfinite(r["val_loss"]) for r in trained.history)
