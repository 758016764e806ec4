import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ausynth.tasks import metrics, statistics

T_975 = {1: 12.706204736174698, 2: 4.302652729749464, 3: 3.182446305284263}  # Student t table, 97.5 %


def per_seed_table() -> pd.DataFrame:
    rows = [("generator", 0, 0.62), ("generator", 1, 0.65), ("generator", 2, 0.65),
            ("supervised", 0, 0.60), ("supervised", 1, 0.62), ("supervised", 2, 0.61),
            ("upsample", 0, 0.59), ("upsample", 1, 0.63),  # seed 2 missing
            ("pseudo_label", 2, 0.70)]  # one seed only
    return pd.DataFrame(rows, columns=["strategy", "seed", "f1_mean"])


def test_seed_interval_is_the_t_interval_of_the_mean():
    mean, low, high = statistics.seed_interval([1.0, 2.0, 3.0, 4.0])
    half = T_975[3] * math.sqrt(5 / 3) / 2  # s = sqrt(5/3), sqrt(n) = 2
    assert (mean, low, high) == pytest.approx((2.5, 2.5 - half, 2.5 + half))
    assert statistics.seed_interval([0.5, np.nan, 0.5, 0.5]) == (0.5, 0.5, 0.5)  # NaN ignored, no spread


def test_seed_interval_of_one_or_no_value_has_no_interval():
    mean, low, high = statistics.seed_interval([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in statistics.seed_interval([]))


def test_paired_differences_rows_and_hand_computed_interval():
    diffs = statistics.paired_differences(per_seed_table(), "f1_mean")
    assert list(diffs.columns) == statistics.DIFFERENCE_COLUMNS
    assert list(zip(diffs["a"], diffs["b"])) == [
        ("generator", "supervised"), ("upsample", "supervised"), ("pseudo_label", "supervised"),
        ("upsample", "generator"), ("pseudo_label", "generator"), ("pseudo_label", "upsample")]
    assert list(diffs["vs_baseline"]) == [True, True, True, False, False, False]
    assert (diffs["metric"] == "f1_mean").all()
    row = diffs.iloc[0]  # generator - supervised per seed: 0.02, 0.03, 0.04; s = 0.01
    half = T_975[2] * 0.01 / math.sqrt(3)
    assert (row.mean_diff, row.ci_low, row.ci_high) == pytest.approx((0.03, 0.03 - half, 0.03 + half))
    assert row.n_seeds == 3 and row.significant


def test_paired_interval_equals_scipy_paired_t_test():
    table = per_seed_table()
    gen = table[table.strategy == "generator"].sort_values("seed")["f1_mean"].to_numpy()
    sup = table[table.strategy == "supervised"].sort_values("seed")["f1_mean"].to_numpy()
    interval = stats.ttest_rel(gen, sup).confidence_interval(0.95)
    row = statistics.paired_differences(table, "f1_mean").iloc[0]
    assert (row.ci_low, row.ci_high) == pytest.approx((interval.low, interval.high))


def test_paired_differences_drop_unshared_seeds_and_need_two():
    diffs = statistics.paired_differences(per_seed_table(), "f1_mean").set_index(["a", "b"])
    upsample = diffs.loc[("upsample", "supervised")]  # seeds 0, 1: -0.01, +0.01
    assert upsample.n_seeds == 2 and upsample.mean_diff == pytest.approx(0.0)
    assert upsample.ci_high == pytest.approx(T_975[1] * math.sqrt(2) * 0.01 / math.sqrt(2))
    assert not upsample.significant
    assert diffs.loc[("upsample", "generator")].mean_diff == pytest.approx(-0.025)
    single = diffs.loc[("pseudo_label", "supervised")]
    assert single.n_seeds == 1 and single.mean_diff == pytest.approx(0.09)
    assert math.isnan(single.ci_low) and math.isnan(single.ci_high) and not single.significant
    nothing = diffs.loc[("pseudo_label", "upsample")]  # no shared seed
    assert nothing.n_seeds == 0 and math.isnan(nothing.mean_diff) and not nothing.significant


def test_paired_differences_refuse_repeated_seeds():
    table = pd.concat([per_seed_table(), per_seed_table().iloc[:1]])
    with pytest.raises(ValueError, match="generator"):
        statistics.paired_differences(table, "f1_mean")


def test_format_difference_in_percentage_points():
    row = {"mean_diff": 0.0321, "ci_low": 0.0102, "ci_high": 0.054, "significant": True}
    assert statistics.format_difference(row) == "+3.21 [+1.02, +5.40]*"
    row = {"mean_diff": -0.005, "ci_low": -0.02, "ci_high": 0.01, "significant": False}
    assert statistics.format_difference(row) == "-0.50 [-2.00, +1.00]"
    shown = statistics.paired_differences(per_seed_table(), "f1_mean").apply(statistics.format_difference, axis=1)
    assert shown.iloc[2] == "+9.00 [n/a]" and shown.iloc[5] == "n/a"


# ----------------------------------------------------------------------------- correlated pairs

def test_phi_coefficients_by_hand_with_unlabelled_entries():
    au1 = [1, 0, 0, 0, 0, 1, 0, 1, 1]
    au2 = [0, 1, 1, 1, 0, 0, 0, 1, np.nan]
    au3 = [0, 1, 1, 0, 1, 0, 0, 1, 1]
    phi = statistics.phi_coefficients(np.array([au1, au2, au3]).T, ["AU1", "AU2", "AU3"])
    # phi = (n11 n00 - n10 n01) / sqrt(n1. n0. n.1 n.0), over rows where both are labelled
    assert phi.at["AU2", "AU3"] == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))
    assert phi.at["AU1", "AU2"] == pytest.approx((1 * 2 - 2 * 3) / math.sqrt(3 * 5 * 4 * 4))  # last row out
    assert phi.at["AU1", "AU3"] == pytest.approx((2 * 2 - 2 * 3) / math.sqrt(4 * 5 * 5 * 4))  # last row in


def test_top_cooccurring_pairs_ranks_by_phi_and_skips_uncorrelated():
    au1 = [1, 1, 0, 0, 0, 0, 0, 0]
    au3 = [0, 1, 1, 1, 0, 0, 0, 1]
    au4 = [0, 1, 1, 0, 1, 0, 0, 1]  # phi(AU3, AU4) = 0.5; AU1 with AU3 or AU4: phi 0
    labels = np.array([au1, au1, au3, au4]).T
    names = ["AU1", "AU2", "AU3", "AU4"]
    assert statistics.top_cooccurring_pairs(labels, names, k=1) == [("AU1", "AU2")]
    assert statistics.top_cooccurring_pairs(labels, names, k=5) == [("AU1", "AU2"), ("AU3", "AU4")]


NAMES = ["AU1", "AU2", "AU3"]
PAIR_TRUE = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 1], [0, 1, np.nan]])
PAIR_PRED = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 1], [0, 1, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]])


def test_pair_fp_rates_by_hand():
    rates = statistics.pair_fp_rates(PAIR_TRUE, PAIR_PRED, NAMES, [("AU2", "AU3")])
    # AU2 without AU3 (labelled): rows 0-2, AU3 fires on 0 and 2; AU3 without AU2: rows 3-4, AU2 fires on 3
    assert rates == pytest.approx({"fp/AU2-to-AU3": 2 / 3, "fp/AU3-to-AU2": 1 / 2})


def test_pair_fdr_by_hand():
    # AU3 predicted on 6 labelled rows, 2 of them AU2-without-AU3 (rows 0, 2): 1/3. (Row 5's false
    # AU3 comes with AU1, not AU2.) AU2 predicted on 4 labelled rows, 1 of them AU3-without-AU2: 1/4.
    assert statistics.pair_fdr(PAIR_TRUE, PAIR_PRED, NAMES, ("AU2", "AU3")) == pytest.approx((1 / 3 + 1 / 4) / 2)
    silent_au2 = PAIR_PRED.copy()
    silent_au2[:, 1] = 0  # AU2 never fires: only the AU2 -> AU3 direction is defined
    assert statistics.pair_fdr(PAIR_TRUE, silent_au2, NAMES, ("AU2", "AU3")) == pytest.approx(1 / 3)
    assert math.isnan(statistics.pair_fdr(PAIR_TRUE, np.zeros_like(PAIR_PRED), NAMES, ("AU2", "AU3")))
    flat = statistics.pair_metrics(PAIR_TRUE, PAIR_PRED, NAMES, [("AU2", "AU3")])
    assert set(flat) == {"fp/AU2-to-AU3", "fp/AU3-to-AU2", "pair_fdr/AU2-AU3"}


def test_pair_fp_rates_equal_the_false_positive_matrix_on_single_au_test_sets():
    rng = np.random.default_rng(5)
    y_true = np.eye(3, dtype=int)[rng.integers(0, 3, 90)]
    y_pred = (rng.random((90, 3)) < 0.3).astype(int)
    matrix = metrics.false_positive_matrix(y_true, y_pred)
    rates = statistics.pair_fp_rates(y_true, y_pred, NAMES, [("AU1", "AU2"), ("AU2", "AU3")])
    assert rates["fp/AU1-to-AU2"] == pytest.approx(matrix[0, 1])
    assert rates["fp/AU2-to-AU1"] == pytest.approx(matrix[1, 0])
    assert rates["fp/AU3-to-AU2"] == pytest.approx(matrix[2, 1])


def test_the_shown_table_gives_one_seed_no_spread_and_an_unscorable_pair_no_number():
    from ausynth.tasks import compare, label_types

    table = pd.DataFrame({"f1_mean": [0.5, 0.61], "f1_mean_sd": [0.0, 0.02], "fdr_mean": [0.2, 0.1],
                          "fdr_mean_sd": [0.0, 0.01], "pair_fdr/AU2-AU3": [np.nan, 0.25],
                          "pair_fdr/AU2-AU3_sd": [0.0, 0.05], "seeds": [1, 3], "never_learnt": [0, 0]},
                         index=pd.Index(["supervised", "generator"], name="strategy"))
    shown = compare.format_table(table, label_types.LABEL_TYPES["au_presence"])
    assert shown.loc["supervised"].tolist() == ["50.00", "20.00", "n/a", 1]
    assert shown.loc["generator"].tolist() == ["61.00 ± 2.00", "10.00 ± 1.00", "25.00 ± 5.00", 3]
