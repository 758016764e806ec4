import numpy as np
import pytest

from ausynth.configs.schema import ToyDatasetConfig
from ausynth.tasks import toy_data

from conftest import shared_data


def test_correlated_labels_have_the_specified_statistics():
    labels = toy_data.sample_correlated_labels(60_000, 0.2, 0.7, np.random.default_rng(1))
    np.testing.assert_allclose(labels.mean(axis=0), 0.2, atol=0.01)
    au2, au3 = labels[:, 1] == 1, labels[:, 2] == 1
    assert au3[au2].mean() == pytest.approx(0.7, abs=0.015)
    assert au2[au3].mean() == pytest.approx(0.7, abs=0.015)
    others = labels[:, [0, 3, 4, 5, 6, 7, 8]] == 1  # independent of AU2
    np.testing.assert_allclose(others[au2].mean(axis=0), 0.2, atol=0.02)


def test_test_set_has_exactly_one_au_per_image_and_equal_counts():
    sets = toy_data.build_toy(ToyDatasetConfig(labelled=50, unlabelled=10, test_per_au=7, difficulty="clean"))
    labels = sets["test"].labels
    assert (labels.sum(axis=1) == 1).all()
    assert (labels.sum(axis=0) == 7).all()


def test_clean_grid_shows_digit_k_exactly_in_the_cells_of_active_aus():
    sets = toy_data.build_toy(ToyDatasetConfig(labelled=100, unlabelled=0, test_per_au=1, difficulty="clean"))
    labelled = sets["labelled"]
    assert labelled.images.shape == (100, 96, 96, 1) and labelled.images.dtype == np.uint8
    cells = labelled.images[..., 0].reshape(100, 3, 32, 3, 32).transpose(0, 1, 3, 2, 4).reshape(100, 9, -1)
    has_ink = cells.max(axis=2) > 0
    np.testing.assert_array_equal(has_ink, labelled.labels == 1)


def test_train_and_test_grids_use_disjoint_digit_images():
    sets = toy_data.build_toy(ToyDatasetConfig(labelled=300, unlabelled=300, test_per_au=30))
    ids = {name: {int(i) for row in s.frame["digit_ids"] for i in row.split(",") if i} for name, s in sets.items()}
    assert ids["test"] and ids["labelled"]
    assert not ids["test"] & (ids["labelled"] | ids["unlabelled"])


def test_same_seed_same_images_other_seed_other_images():
    cfg = ToyDatasetConfig(labelled=40, unlabelled=20, test_per_au=2, difficulty="hard", seed=3)
    a, b = toy_data.build_toy(cfg), toy_data.build_toy(cfg)
    c = toy_data.build_toy(cfg.model_copy(update={"seed": 4}))
    for name in a:
        np.testing.assert_array_equal(a[name].images, b[name].images)
    assert not np.array_equal(a["labelled"].images, c["labelled"].images)


def test_the_oracles_set_has_independent_au2_au3_from_the_training_digits_with_its_own_draws():
    cfg = ToyDatasetConfig(labelled=300, unlabelled=300, test_per_au=30, p_correlated=0.95)
    independent = toy_data.independent_config(cfg, 6000)
    sets, oracle = toy_data.build_toy(cfg), toy_data.build_toy(independent, draw_seed=7919)["labelled"]
    labels = oracle.labels == 1
    assert len(labels) == 6000
    np.testing.assert_allclose(labels.mean(axis=0), cfg.p_active, atol=0.02)  # the same marginals
    assert labels[labels[:, 1], 2].mean() == pytest.approx(cfg.p_active, abs=0.03)  # P(AU3 | AU2): independent
    ids = {int(i) for row in oracle.frame["digit_ids"] for i in row.split(",") if i}
    test_ids = {int(i) for row in sets["test"].frame["digit_ids"] for i in row.split(",") if i}
    assert not ids & test_ids  # never the digits the test set is drawn from
    first = toy_data.build_toy(independent.model_copy(update={"labelled": 300}), draw_seed=7919)["labelled"]
    assert not np.array_equal(first.images, sets["labelled"].images)  # not the comparison's own images


def test_noise_grows_with_difficulty_on_blank_cells():
    spread = {}
    for difficulty in ("clean", "medium", "hard"):
        sets = toy_data.build_toy(ToyDatasetConfig(labelled=20, unlabelled=0, test_per_au=1, difficulty=difficulty))
        spread[difficulty] = sets["test"].images.astype(float).std()
    assert spread["clean"] < spread["medium"] < spread["hard"]


def test_unlabelled_pool_hides_labels_but_keeps_truth_for_diagnostics():
    pool = toy_data.build_toy(ToyDatasetConfig(labelled=10, unlabelled=30, test_per_au=1))["unlabelled"]
    assert np.isnan(pool.labels).all()
    assert {f"true_AU{k}" for k in range(1, 10)} <= set(pool.frame.columns)


def test_validation_rows_are_a_share_of_the_labelled_set():
    labelled = toy_data.build_toy(ToyDatasetConfig(labelled=200, unlabelled=0, test_per_au=1, val_fraction=0.25))["labelled"]
    assert (labelled.frame["split"] == "val").sum() == 50


def test_mnist_digits_load_from_idx_files():
    folder = shared_data("mnist-t10k")
    digits, labels = toy_data.load_digits("mnist", folder)
    assert digits.shape == (10_000, 32, 32) and set(labels) == set(range(10))
    sets = toy_data.build_toy(ToyDatasetConfig(labelled=20, unlabelled=0, test_per_au=2, digits="mnist",
                                               mnist_path=folder))
    assert sets["test"].images.shape == (18, 96, 96, 1)
