import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score

from ausynth.configs.schema import ToyDatasetConfig
from ausynth.tasks import ideal_observer, toy_data


def test_cell_likelihood_matches_the_clipped_gaussian_pixel_by_pixel():
    rng = np.random.default_rng(0)
    cells = rng.choice([0, 255, 3, 77, 128, 250], size=(5, 40)).astype(np.uint8)
    templates = rng.random((3, 40))
    mean, std = 1.0, 5.0
    fast = ideal_observer.cell_log_likelihood(cells, templates, mean, std).numpy()

    def direct(cell, s):
        v = cell / 255.0
        return np.where(cell == 0, norm.logcdf((0.5 / 255 - s - mean) / std),
                        np.where(cell == 255, norm.logsf((254.5 / 255 - s - mean) / std),
                                 norm.logpdf(v, loc=s + mean, scale=std))).sum()

    slow = np.array([[direct(cell, s) for s in templates] for cell in cells])
    # equal up to a constant per cell, shared by the templates
    np.testing.assert_allclose(fast - fast[:, :1], slow - slow[:, :1], atol=1e-8)


@pytest.fixture(scope="module")
def hard_test():
    """A hard-noise test set and its ideal scores, computed once for the tests that share them."""
    config = ToyDatasetConfig(labelled=1, unlabelled=0, test_per_au=100, difficulty="hard")
    test = toy_data.build_toy(config)["test"]
    return test, ideal_observer.ideal_scores(test.images, config)


def test_ideal_scores_rank_better_than_the_cells_ink(hard_test):
    test, scores = hard_test
    cells = test.images[..., 0].reshape(len(test.images), 3, 32, 3, 32).transpose(0, 1, 3, 2, 4)
    ink = cells.reshape(len(test.images), 9, -1).mean(axis=2)
    truth = test.labels > 0.5
    ideal_ap = np.mean([average_precision_score(truth[:, k], scores[:, k]) for k in range(9)])
    ink_ap = np.mean([average_precision_score(truth[:, k], ink[:, k]) for k in range(9)])
    assert ideal_ap > ink_ap + 0.05 and ideal_ap > 0.6


def test_knowing_there_is_one_au_per_grid_ranks_better_still(hard_test):
    test, scores = hard_test
    own_cell = ideal_observer.ranking_summary(test.labels, scores)
    whole_grid = ideal_observer.ranking_summary(test.labels, ideal_observer.one_au_posterior(scores))
    assert whole_grid["average_precision"] > own_cell["average_precision"] + 0.03


def test_medium_noise_is_separable_for_the_ideal_observer():
    config = ToyDatasetConfig(labelled=1, unlabelled=0, test_per_au=20, difficulty="medium")
    test = toy_data.build_toy(config)["test"]
    summary = ideal_observer.ranking_summary(test.labels, ideal_observer.ideal_scores(test.images, config))
    assert summary["average_precision"] > 0.99 and summary["max_f1"] > 0.98


def test_clean_grids_are_refused():
    config = ToyDatasetConfig(labelled=1, unlabelled=0, test_per_au=1, difficulty="clean")
    with pytest.raises(ValueError, match="needs noise"):
        ideal_observer.ideal_scores(toy_data.build_toy(config)["test"].images, config)


def test_f1_bound_on_a_hand_worked_curve():
    # thresholds give (FDR, F1): (0, 2/3), (1/2, 1/2), (1/3, 4/5), (1/2, 2/3) and nothing predicted (0, 0)
    truth, scores = np.array([[1], [1], [0], [0]]), np.array([[4.0], [2.0], [3.0], [1.0]])
    reached, bound = ideal_observer.f1_bound(truth, scores, max_fdr=0.2)
    assert reached == pytest.approx(2 / 3)
    # the hull between (0, 2/3) and (1/3, 4/5) at FDR 0.2
    exact = 2 / 3 + 0.2 * (4 / 5 - 2 / 3) / (1 / 3)
    assert exact - 1e-9 <= bound <= exact + 0.005


def test_f1_bound_brackets_what_the_scores_reach_and_grows_with_the_allowed_fdr(hard_test):
    test, scores = hard_test
    bounds = [ideal_observer.f1_bound(test.labels, scores, fdr) for fdr in (0.05, 0.15, 0.3)]
    for reached, bound in bounds:
        assert reached <= bound + 1e-12
    assert bounds[0][1] < bounds[1][1] < bounds[2][1]
    # with no price on FDR the bound is the unconstrained best mean F1
    assert bounds[2][1] <= ideal_observer.ranking_summary(test.labels, scores)["max_f1"] + 1e-12
