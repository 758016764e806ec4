"""The classifier (training, early stopping, prediction), its store stage, and the strategy registry."""

import json

import numpy as np
import pytest
import torch

from ausynth.configs.loader import load_config
from ausynth.configs.schema import ClassifierConfig, PseudoLabelConfig, ToyDatasetConfig
from ausynth.models.au_classifier import AUClassifier
from ausynth.tasks import classifiers, datasets, imageset, toy_data
from ausynth.tasks.errors import DataError
from ausynth.tasks.pseudo_labels import SCORES, pseudo_labelled
from ausynth.tasks.store import StoredItem
from ausynth.tasks.strategies import BASELINE, STRATEGIES, Inputs, strategy
from ausynth.tasks.strategies.base import sample
from ausynth.tasks.train_classifier import predict_proba, train_classifier

from conftest import TINY

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def toy():
    return toy_data.build_toy(ToyDatasetConfig(labelled=300, unlabelled=120, test_per_au=5, difficulty="clean"))


def _config(tmp_path, *overrides):
    return load_config("toy-quick", [*TINY, f"workspace={tmp_path / 'ws'}", *overrides])


def _stored(tmp_path, name: str, images: imageset.ImageSet) -> StoredItem:
    """An image set written as a store-like entry holding one set called ``name``."""
    folder = tmp_path / "entry"
    (folder / name).mkdir(parents=True)
    imageset.write(images, folder / name)
    return StoredItem(folder, "entry-key")


@pytest.mark.parametrize("backbone, channels, size", [("small_cnn", 1, 96), ("small_cnn", 3, 32), ("resnet18", 3, 64)])
def test_classifier_outputs_one_score_per_au(backbone, channels, size):
    net = AUClassifier(9, channels, backbone, width=4)
    assert net(torch.zeros(2, channels, size, size)).shape == (2, 9)


def test_a_classifier_with_an_input_size_scores_images_area_averaged_to_it():
    """96 px images reach the backbone as 4x4 block means: the same scores as the block-averaged images."""
    net = AUClassifier(9, 1, width=4, input_size=24).eval()
    images = torch.rand(3, 1, 96, 96)
    blocks = images.reshape(3, 1, 24, 4, 24, 4).mean((3, 5))
    torch.testing.assert_close(net(images), net(blocks))
    torch.testing.assert_close(net(images), net.head(net.backbone(blocks)))


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_training_learns_the_clean_toy_set(toy, loss):
    train, val = datasets.train_val(toy["labelled"])
    trained = train_classifier(train, val, ClassifierConfig(max_epochs=10, patience=10, loss=loss, width=8, lr=0.005,
                                                            batch_size=32), 0, CPU)
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
    train, val = datasets.train_val(toy["labelled"])
    trained = train_classifier(train, val, ClassifierConfig(max_epochs=50, patience=3, width=4,
                                                                      monitor="val_loss", min_epochs=1), 0, CPU)
    assert trained.best_epoch == 2 and len(trained.history) == 5
    for key, value in trained.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])


def test_train_val_splits_the_labelled_rows_by_their_split_column(toy):
    labelled = toy["labelled"]
    train, val = datasets.train_val(labelled)
    assert len(train) + len(val) == len(labelled) and len(val) > 0
    assert set(train.frame["split"]) == {"train"} and set(val.frame["split"]) == {"val"}


# ----------------------------------------------------------------------------- the registry

def test_the_registry_names_every_strategy_and_what_it_needs():
    assert list(STRATEGIES) == ["supervised", "upsample", "pseudo_label", "generator", "semi_supervised_gan"]
    assert BASELINE is strategy("supervised")
    needs = {name: (s.needs_pool, s.needs_pool_scores, s.needs_generated) for name, s in STRATEGIES.items()}
    assert needs == {"supervised": (False, False, False), "upsample": (False, False, False),
                     "pseudo_label": (True, True, False), "generator": (False, True, True),
                     "semi_supervised_gan": (True, False, False)}
    with pytest.raises(ValueError, match="unknown strategy 'pseudo'.*'pseudo_label'"):
        strategy("pseudo")


def test_the_baselines_short_trainings_are_submitted_last():
    from ausynth.flows.compare import longest_first

    chosen = [strategy(name) for name in ("supervised", "upsample", "generator")]
    order = [(s.name, seed) for s, seed in longest_first(chosen, [0, 1])]
    assert order == [("upsample", 0), ("upsample", 1), ("generator", 0), ("generator", 1),
                     ("supervised", 0), ("supervised", 1)]


def test_supervised_adds_nothing_and_upsample_adds_exactly_size_rows_from_train(toy, tmp_path):
    cfg = _config(tmp_path, "augment.size=500", "dataset.unlabelled=500")
    train, _ = datasets.train_val(toy["labelled"])
    train.frame["row"] = np.arange(len(train))
    assert strategy("supervised").added(cfg, Inputs(None), train, seed=1) is None
    extra = strategy("upsample").added(cfg, Inputs(None), train, seed=1)
    assert len(extra) == 500 and set(extra.frame["origin"]) == {"upsampled"}
    rows = extra.frame["row"].to_numpy()
    np.testing.assert_array_equal(extra.images, train.images[rows])  # each image comes with its own labels
    np.testing.assert_array_equal(extra.labels, train.labels[rows])
    assert len(np.unique(rows)) < 500  # drawn with replacement (from 270 rows)
    again = strategy("upsample").added(cfg, Inputs(None), train, seed=1)
    assert again.frame["row"].tolist() == rows.tolist()  # the seed decides the draw
    assert strategy("upsample").added(cfg, Inputs(None), train, seed=2).frame["row"].tolist() != rows.tolist()


def test_pseudo_labels_hard_soft_and_confidence(toy):
    pool = toy["unlabelled"].subset(np.arange(len(toy["unlabelled"])))
    pool.frame["row"] = np.arange(len(pool))
    scores = np.random.default_rng(0).random((len(pool), 9)).astype(np.float32)
    hard = pseudo_labelled(pool, scores, PseudoLabelConfig(mode="hard"), 0.5)
    soft = pseudo_labelled(pool, scores, PseudoLabelConfig(mode="soft"), 0.5)
    assert len(hard) == len(soft) == len(pool) and set(hard.frame["origin"]) == {"pseudo"}
    assert set(np.unique(hard.labels)) <= {0.0, 1.0}
    np.testing.assert_allclose(soft.labels, scores[soft.frame["row"]])
    assert ((soft.labels >= 0.5) == (hard.labels == 1)).all()
    strict = pseudo_labelled(pool, scores, PseudoLabelConfig(mode="hard"), 0.7)
    assert ((scores >= 0.7) == (strict.labels == 1)).all()  # the classifier's threshold, not 0.5
    sure = np.where(scores > 0.5, 0.99, 0.01).astype(np.float32)
    sure[:100, 0] = 0.6  # 100 unsure images
    picked = pseudo_labelled(pool, sure, PseudoLabelConfig(confidence=0.9), 0.5)
    assert len(picked) == 20 and (picked.frame["row"] >= 100).all()


def test_sample_draws_exactly_size_rows_or_fails_naming_the_shortfall(toy):
    pool = toy["unlabelled"].subset(np.arange(len(toy["unlabelled"])))
    pool.frame["row"] = np.arange(len(pool))
    chosen = sample(pool, 50, seed=3, what="pool images")
    assert len(chosen) == 50 and chosen.frame["row"].nunique() == 50  # without replacement
    assert sample(pool, 50, seed=3, what="pool images").frame["row"].tolist() == chosen.frame["row"].tolist()
    with pytest.raises(DataError, match="only 120 pool images to add where augment.size is 121"):
        sample(pool, 121, seed=3, what="pool images")


def test_pseudo_label_strategy_reads_the_teachers_scores_and_refuses_too_few(toy, tmp_path):
    pool = toy["unlabelled"].subset(np.arange(len(toy["unlabelled"])))
    pool.frame["row"] = np.arange(len(pool))
    dataset = _stored(tmp_path, "unlabelled", pool)
    scores = np.where(np.random.default_rng(1).random((len(pool), 9)) > 0.5, 0.99, 0.01).astype(np.float32)
    scores[:100, 0] = 0.6  # only 20 images are sure of every AU
    (tmp_path / "scores").mkdir()
    np.save(tmp_path / "scores" / SCORES, scores)
    inputs = Inputs(dataset, pool_scores=StoredItem(tmp_path / "scores", "scores-key"))
    cfg = _config(tmp_path, "augment.size=20", "pseudo_label.confidence=0.9")
    added = strategy("pseudo_label").added(cfg, inputs, None, seed=0)
    assert len(added) == 20 and set(added.frame["origin"]) == {"pseudo"}
    rows = added.frame["row"].to_numpy()
    assert (rows >= 100).all() and len(set(rows)) == 20
    np.testing.assert_array_equal(added.labels, (scores[rows] >= 0.5).astype(np.float32))  # its own row's labels
    np.testing.assert_array_equal(added.images, pool.images[rows])
    more = cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"size": 50})})
    with pytest.raises(DataError, match="only 20 pseudo-labelled images passing pseudo_label.confidence=0.9 to add "
                                        "where augment.size is 50"):
        strategy("pseudo_label").added(more, inputs, None, seed=0)
    assert strategy("pseudo_label").key_parts(cfg, inputs)[-1] == "scores-key"


def test_generator_strategy_samples_the_generated_images(toy, tmp_path):
    generated = toy["test"].with_labels(toy["test"].labels, origin="generated")  # 45 single-AU images
    inputs = Inputs(None, generated=_stored(tmp_path, "images", generated))
    cfg = _config(tmp_path, "augment.size=30")
    added = strategy("generator").added(cfg, inputs, None, seed=0)
    assert len(added) == 30 and set(added.frame["origin"]) == {"generated"}
    assert (added.labels.sum(axis=1) == 1).all()
    with pytest.raises(DataError, match="only 45 generated images to add where augment.size is 100"):
        strategy("generator").added(_config(tmp_path, "augment.size=100"), inputs, None, seed=0)
    assert strategy("generator").key_parts(cfg, inputs)[-1] == "entry-key"


# ----------------------------------------------------------------------------- the classifier stage

def test_fit_classifier_stores_once_and_evaluate_scores_the_test_set(tmp_path):
    cfg = _config(tmp_path)
    dataset = datasets.prepare_dataset(cfg)
    model = classifiers.fit_classifier(cfg, BASELINE, 0, Inputs(dataset))
    assert model.path.parent == datasets.store_root(cfg) / "classifiers"
    assert model.key == classifiers.classifier_key(cfg, BASELINE, 0, Inputs(dataset))
    assert {"model.pt", "info.json", "history.json", ".entry.json"} <= {p.name for p in model.path.iterdir()}
    info = json.loads((model.path / "info.json").read_text())
    n_train = len(datasets.train_val(datasets.load_set(dataset, "labelled"))[0])
    assert (info["strategy"], info["seed"], info["n_train"], info["n_added"]) == ("supervised", 0, n_train, 0)
    mtime = (model.path / "model.pt").stat().st_mtime_ns
    assert classifiers.fit_classifier(cfg, BASELINE, 0, Inputs(dataset)) == model  # reused, not retrained
    assert (model.path / "model.pt").stat().st_mtime_ns == mtime

    result = classifiers.evaluate(cfg, dataset, model)
    test = datasets.load_set(dataset, "test")
    assert (result.strategy, result.seed, result.label_type) == ("supervised", 0, "au_presence")
    assert list(result.per_output.index) == test.label_columns
    assert result.error_matrix.shape == (9, 9)
    assert len(result.history) == info["epochs"]
    predicted = predict_proba(result.model, test.images, CPU) >= cfg.classifier.threshold
    truth = test.labels >= 0.5
    tp, fp, fn = (truth & predicted).sum(0), (~truth & predicted).sum(0), (truth & ~predicted).sum(0)
    f1 = 2 * tp / (2 * tp + fp + fn)  # every AU has test positives: never 0 / 0
    np.testing.assert_allclose(result.per_output["f1"].to_numpy(), f1)
    assert result.metrics["f1_mean"] == pytest.approx(f1.mean())
    assert result.metrics["f1_AU3"] == pytest.approx(f1[2])
    assert (result.per_output["labelled"] == len(test)).all()


def test_predict_proba_is_in_unit_range(toy):
    probs = predict_proba(AUClassifier(9, 1, width=4), toy["test"].images, CPU)
    assert probs.shape == (45, 9) and (probs >= 0).all() and (probs <= 1).all()


def test_a_stored_classifier_comes_back_with_its_input_size(tmp_path):
    cfg = _config(tmp_path, "classifier.input_size=24")
    dataset = datasets.prepare_dataset(cfg)
    model = classifiers.fit_classifier(cfg, BASELINE, 0, Inputs(dataset))
    assert json.loads((model.path / "info.json").read_text())["input_size"] == 24
    net = classifiers.load_classifier(model, CPU)
    assert net.input_size == 24
    test = datasets.load_set(dataset, "test")
    trained = train_classifier(*datasets.train_val(datasets.load_set(dataset, "labelled")), cfg.classifier, 0, CPU)
    np.testing.assert_allclose(predict_proba(net, test.images, CPU), predict_proba(trained.model, test.images, CPU),
                               atol=1e-6)
