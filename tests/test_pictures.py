"""The comparison's per-AU chart: mean and spread over seeds, a y range that shows differences, the legend
beside the plot, a small file."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from ausynth.tasks import compare, statistics
from ausynth.tasks.classifiers import Evaluation

AUS = [f"AU{k}" for k in range(1, 10)]
STRATEGIES = {"supervised": 0.90, "upsample": 0.91, "pseudo_label": 0.93, "generator": 0.97}


def evaluations(seeds=(0, 1, 2)) -> list[Evaluation]:
    rng = np.random.default_rng(0)
    found = []
    for strategy, level in STRATEGIES.items():
        for seed in seeds:
            f1 = np.clip(level + rng.normal(0, 0.02, len(AUS)), 0, 1)
            found.append(Evaluation(strategy, seed, "au_presence", pd.DataFrame({"f1": f1}, index=AUS),
                                    {"f1_mean": float(f1.mean())}, None, None, [], {}))
    return found


def test_per_au_chart_shows_each_strategys_mean_and_sd_over_seeds():
    found = evaluations()
    figure = compare.figures(found, np.zeros((4, len(AUS))), AUS)["per_output_f1"]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)  # as Tracker.log_outputs writes it
    ax = figure.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert [c.get_label() for c in bars] == list(STRATEGIES)
    f1 = pd.DataFrame([{"strategy": e.strategy, "seed": e.seed, **e.per_output["f1"]} for e in found])
    for container, strategy in zip(bars, STRATEGIES):
        marker, _, (segments,) = container.lines
        np.testing.assert_allclose(marker.get_ydata(), f1[f1.strategy == strategy][AUS].mean())
        spread = [high - low for (_, low), (_, high) in segments.get_segments()]
        np.testing.assert_allclose(spread, 2 * f1[f1.strategy == strategy][AUS].std())
    low, high = ax.get_ylim()
    assert 0.75 < low < f1[AUS].min().min() and high <= 1.02  # zoomed in on the scores, not 0..1
    assert [t.get_text() for t in ax.get_xticklabels()] == AUS
    assert "3 seeds" in ax.get_ylabel() and ax.get_title() == "F1 per AU and strategy"
    legend, plot = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= plot.x1  # beside the plot, over no marker
    assert len(buffer.getvalue()) < 150_000


def test_one_seed_has_no_spread_and_scores_near_zero_keep_zero_as_floor():
    assert compare.fitted_range(0.01, 0.3)[0] == 0.0 and compare.fitted_range(0.9, 1.0)[1] == 1.02
    assert compare.fitted_range(-0.4, 0.6)[0] < -0.4
    mean, sd = compare.per_output(evaluations(seeds=(0,)))
    assert (sd == 0).all().all() and list(mean.columns) == list(STRATEGIES)


def test_the_strategy_chart_shows_each_headline_metric_with_its_seed_interval():
    found = evaluations()
    for e in found:
        e.metrics["fdr_mean"] = 1 - e.metrics["f1_mean"]
    figure = compare.figures(found, np.zeros((4, len(AUS))), AUS)["strategies"]
    f1_panel, fdr_panel = figure.axes
    assert [t.get_text() for t in f1_panel.get_xticklabels()] == list(STRATEGIES)
    (bars,) = [c for c in f1_panel.containers if isinstance(c, ErrorbarContainer)]
    per_seed = compare.per_seed_table(found)
    for k, strategy in enumerate(STRATEGIES):
        mean, low, high = statistics.seed_interval(per_seed.loc[per_seed["strategy"] == strategy, "f1_mean"])
        assert bars.lines[0].get_ydata()[k] == pytest.approx(mean)
        segment = bars.lines[2][0].get_segments()[k]
        assert segment[0][1] == pytest.approx(low) and segment[1][1] == pytest.approx(high)
    assert (f1_panel.get_title(), fdr_panel.get_title()) == ("F1", "FDR")
