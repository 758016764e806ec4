import numpy as np
import pytest
import torch

from ausynth.configs.schema import ClassifierConfig, PseudoLabelConfig, ToyDatasetConfig
from ausynth.models.au_classifier import AUClassifier
from ausynth.tasks import strategies, toy_data
from ausynth.tasks.train_classifier import predict_proba, train_classifier

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def toy():
    return toy_data.build_toy(ToyDatasetConfig(labelled=300, unlabelled=120, test_per_au=5, difficulty="clean"))


@pytest.mark.parametrize("backbone, channels, size", [("small_cnn", 1, 96), ("small_cnn", 3, 32), ("resnet18", 3, 64)])
def test_classifier_outputs_one_score_per_au(backbone, channels, size):
    net = AUClassifier(9, channels, backbone, width=4)
    assert net(torch.zeros(2, channels, size, size)).shape == (2, 9)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_training_learns_the_clean_toy_set(toy, loss):
    train, val = strategies.train_val(toy["labelled"])
    trained = train_classifier(train, val, ClassifierConfig(max_epochs=10, patience=10, loss=loss, width=8, lr=0.005, batch_size=32), 0, CPU)
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]
    assert max(r["val_f1"] for r in trained.history) > 0.5
    assert trained.images_per_second > 0


def test_early_stopping_restores_the_best_epoch(toy, monkeypatch):
    """Validation loss that worsens after epoch 2 must stop training and bring back epoch 2's weights."""
    import ausynth.tasks.train_classifier as tc

    losses = iter([0.5, 0.3, 0.4, 0.45, 0.6, 0.7])
    snapshots = []

    def fake_validate(model, *args):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_loss": next(losses), "val_f1": 0.0}

    monkeypatch.setattr(tc, "_validate", fake_validate)
    train, val = strategies.train_val(toy["labelled"])
    trained = train_classifier(train, val, ClassifierConfig(max_epochs=50, patience=3, width=4), 0, CPU)
    assert trained.best_epoch == 2 and len(trained.history) == 5
    for key, value in trained.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])


def test_upsample_adds_exactly_size_rows_from_train(toy):
    train, _ = strategies.train_val(toy["labelled"])
    extra = strategies.upsample(train, 500, seed=1)
    assert len(extra) == 500 and set(extra.frame["origin"]) == {"upsampled"}
    assert len(strategies.training_set(train, extra)) == len(train) + 500


def test_pseudo_labels_hard_soft_and_confidence(toy):
    pool = toy["unlabelled"].subset(np.arange(len(toy["unlabelled"])))
    pool.frame["row"] = np.arange(len(pool))
    scores = np.random.default_rng(0).random((len(pool), 9)).astype(np.float32)
    hard = strategies.pseudo_label(pool, scores, 50, PseudoLabelConfig(mode="hard"), 0.5, seed=0)
    soft = strategies.pseudo_label(pool, scores, 50, PseudoLabelConfig(mode="soft"), 0.5, seed=0)
    assert set(np.unique(hard.labels)) <= {0.0, 1.0}
    np.testing.assert_allclose(soft.labels, scores[soft.frame["row"]])
    assert ((soft.labels >= 0.5) == (hard.labels == 1)).all()
    sure = np.where(scores > 0.5, 0.99, 0.01).astype(np.float32)
    sure[:100, 0] = 0.6  # 100 unsure images
    picked = strategies.pseudo_label(pool, sure, 20, PseudoLabelConfig(confidence=0.9), 0.5, seed=0)
    assert len(picked) == 20 and (picked.frame["row"] >= 100).all()
    with pytest.raises(ValueError, match="only 20 unlabelled images pass"):
        strategies.pseudo_label(pool, sure, 50, PseudoLabelConfig(confidence=0.9), 0.5, seed=0)


def test_predict_proba_is_in_unit_range(toy):
    probs = predict_proba(AUClassifier(9, 1, width=4), toy["test"].images, CPU)
    assert probs.shape == (45, 9) and (probs >= 0).all() and (probs <= 1).all()
