"""Aggregate (strategy, seed) evaluations into the comparison's tables and pictures.

Pure functions of the evaluations: they return tables and ``matplotlib`` figures (drawn on
``Figure`` objects, never through pyplot's global state, so any thread may call them); the
tracker writes them to the run folder and MLflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ausynth.tasks import label_types, statistics
from ausynth.tasks.classifiers import Evaluation
from ausynth.tasks.strategies import BASELINE
from ausynth.tasks.metrics import cooccurrence

PERCENT = ("f1", "fdr", "precision", "recall", "accuracy")  # metric prefixes shown in %, as the thesis does
TRAINING = ("best_epoch", "epochs", "n_train", "images_per_second", "never_learnt")


def kind_of(evaluations: list[Evaluation]) -> label_types.LabelType:
    return label_types.label_type(evaluations[0].label_type)


def per_seed_table(evaluations: list[Evaluation]) -> pd.DataFrame:
    """A row per (strategy, seed): how training went and every flat test metric."""
    return pd.DataFrame([{"strategy": e.strategy, "seed": e.seed, **{k: e.info.get(k) for k in TRAINING},
                          **e.metrics} for e in evaluations])


def compared_metrics(evaluations: list[Evaluation], per_seed: pd.DataFrame) -> list[str]:
    """The label type's summary metrics and, for AUs, the FDR of the most co-occurring training pairs."""
    return [*kind_of(evaluations).summary_metrics, *[c for c in per_seed.columns if c.startswith("pair_fdr/")]]


def comparison_table(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Strategy rows: each compared metric's mean over seeds (``f1_mean``) and standard deviation
    (``f1_mean_sd``), the seed count and how many seeds' classifiers never learnt."""
    rows = per_seed_table(evaluations)
    metrics = compared_metrics(evaluations, rows)
    grouped = rows.groupby("strategy", sort=False)
    spread = grouped[metrics].std().fillna(0.0).add_suffix("_sd")  # one seed has no spread: 0
    table = pd.concat([grouped[metrics].mean(), spread], axis=1)
    table["seeds"] = grouped.size()
    table["never_learnt"] = grouped["never_learnt"].sum().astype(int)
    return table


def differences(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Every strategy against the baseline and against each other: paired differences over seeds of each
    compared metric, with a 95% t interval and whether it excludes 0 (``statistics.paired_differences``)."""
    per_seed = per_seed_table(evaluations)
    found = [statistics.paired_differences(per_seed, metric, baseline=BASELINE.name)
             for metric in compared_metrics(evaluations, per_seed)]
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=statistics.DIFFERENCE_COLUMNS)


def format_differences(diffs: pd.DataFrame, kind: label_types.LabelType) -> pd.DataFrame:
    """Strategy rows x headline metrics: the difference to the baseline in percentage points with its
    95% interval, '*' where the interval excludes 0."""
    versus = diffs[diffs["vs_baseline"] & diffs["metric"].isin(_shown_metrics(set(diffs["metric"]), kind))]
    shown = versus.assign(text=versus.apply(statistics.format_difference, axis=1))
    table = shown.pivot(index="a", columns="metric", values="text").rename_axis(index="strategy", columns=None)
    return table[_shown_metrics(table.columns, kind)].rename(columns=_header)


def best_strategy(table: pd.DataFrame, kind: label_types.LabelType) -> str:
    return str(table[kind.primary_metric].idxmax())


def table_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The table as parent-run metrics, e.g. ``pseudo_label/f1_mean`` and ``pseudo_label/f1_mean_sd``."""
    return {f"{strategy}/{column}": float(value) for strategy, row in table.iterrows()
            for column, value in row.items() if column != "seeds"}


def per_output(evaluations: list[Evaluation]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Output rows (AUs, emotions, ...) x strategy columns: the per-output metric's mean over seeds, and its
    standard deviation (0 for a single seed)."""
    metric = kind_of(evaluations).per_output_metric
    frames = [e.per_output[metric].rename(e.strategy) for e in evaluations]
    grouped = pd.concat(frames, axis=1).T.groupby(level=0, sort=False)
    return grouped.mean().T, grouped.std().fillna(0.0).T


def fitted_range(low: float, high: float) -> tuple[float, float]:
    """Y limits around the error bars, with a margin, so that a difference of a few points shows. Scores that
    are all >= 0 keep 0 as the floor; the top stops just above 1, the best any of these scores can be."""
    pad = max(0.02, 0.08 * (high - low))
    return max(low - pad, 0.0 if low >= 0 else -1.0), min(high + pad, 1.02)


def plot_per_output(mean: pd.DataFrame, sd: pd.DataFrame, metric: str, seeds: int, per: str) -> Figure:
    """Each output's test metric per strategy, mean and sd over seeds as a marker with an error bar.

    Markers, not bars: the y range is fitted to the error bars (``fitted_range``), and a bar cut off by a
    zoomed axis would misstate its length. Strategies sit side by side within each output, the legend
    outside the plot."""
    x = np.arange(len(mean))
    offsets = (np.arange(len(mean.columns)) - (len(mean.columns) - 1) / 2) * 0.8 / len(mean.columns)
    fig = Figure(figsize=(max(6.0, 0.7 * len(mean) + 2.5), 4.2))
    ax = fig.subplots()
    for offset, strategy in zip(offsets, mean.columns):
        ax.errorbar(x + offset, mean[strategy].to_numpy(), yerr=sd[strategy].to_numpy(), fmt="o", markersize=4,
                    capsize=2, elinewidth=1, label=strategy)
    ax.set_xticks(x, mean.index, rotation=90 if len(mean) > 12 else 0)
    ax.set_xlim(-0.5, len(mean) - 0.5)
    for boundary in x[:-1] + 0.5:
        ax.axvline(boundary, color="0.85", lw=0.6)
    ax.grid(axis="y", color="0.9")
    ax.set_ylim(*fitted_range(float((mean - sd).min().min()), float((mean + sd).max().max())))
    ax.set_ylabel(f"test {metric}, mean ± sd over {seeds} seed{'s' if seeds > 1 else ''}")
    ax.set_title(f"{metric.upper() if len(metric) <= 3 else metric} per {per} and strategy")
    ax.legend(title="strategy", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    return fig


def plot_strategies(per_seed: pd.DataFrame, metrics: list[str]) -> Figure:
    """One panel per headline metric: each strategy's mean over seeds with its 95% t interval, strategies
    side by side, so a reader sees at a glance which differences are larger than the seeds' spread."""
    strategies = list(dict.fromkeys(per_seed["strategy"]))
    fig = Figure(figsize=(max(6.0, 3.0 * len(metrics)), 3.8))
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        found = [statistics.seed_interval(per_seed.loc[per_seed["strategy"] == s, metric]) for s in strategies]
        mean, low, high = (np.array(column) for column in zip(*found))
        spread = np.nan_to_num(np.vstack([mean - low, high - mean]))  # one seed: a marker alone
        ax.errorbar(np.arange(len(strategies)), mean, yerr=spread, fmt="o", capsize=4, markersize=6)
        ax.set_xticks(np.arange(len(strategies)), strategies, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(strategies) - 0.5)
        ax.grid(axis="y", color="0.9")
        bottom, top = np.nanmin(mean - spread[0]), np.nanmax(mean + spread[1])
        if np.isfinite(bottom) and np.isfinite(top):
            ax.set_ylim(*fitted_range(float(bottom), float(top)))
        ax.set_title(_header(metric).removesuffix(" %"))  # fractions, as the metrics are logged
    seeds = per_seed.groupby("strategy")["seed"].nunique().max()
    fig.suptitle(f"test metrics per strategy: mean and 95% interval over {seeds} seed{'s' if seeds > 1 else ''}")
    fig.tight_layout()
    return fig


def plot_confusion(cooccur: np.ndarray | None, errors: dict[str, np.ndarray], names: list[str],
                   title: str) -> Figure:
    """Training-set co-occurrence (AUs) beside each strategy's error matrix at test, on one colour scale."""
    panels = [("train: P(column AU | row AU)", cooccur)] if cooccur is not None else []
    panels += [(f"{strategy}: {title}", matrix) for strategy, matrix in errors.items()]
    top = max(max(float(m.max()) for _, m in panels), 1e-6)
    fig = Figure(figsize=(4.6 * len(panels) + 1, 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, matrix) in zip(axes, panels):
        image = ax.imshow(matrix, vmin=0, vmax=top, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize="small")
        ax.set_yticks(range(len(names)), names, fontsize="small")
        ax.set_title(name, fontsize="medium")
    fig.colorbar(image, ax=list(axes), fraction=0.02)
    return fig


def mean_error_matrices(evaluations: list[Evaluation]) -> dict[str, np.ndarray]:
    by_strategy: dict[str, list[np.ndarray]] = {}
    for e in evaluations:
        if e.error_matrix is not None:
            by_strategy.setdefault(e.strategy, []).append(e.error_matrix)
    return {s: np.mean(ms, axis=0) for s, ms in by_strategy.items()}


def figures(evaluations: list[Evaluation], train_labels: np.ndarray, names: list[str]) -> dict[str, Figure]:
    """The per-output chart, the headline metrics per strategy and, where the label type has one, the
    error-matrix view."""
    kind = kind_of(evaluations)
    shown = {f"per_output_{kind.per_output_metric}": plot_per_output(
        *per_output(evaluations), kind.per_output_metric, len({e.seed for e in evaluations}),
        "AU" if kind.per_au else "output")}
    per_seed = per_seed_table(evaluations)
    shown["strategies"] = plot_strategies(per_seed, _shown_metrics(per_seed.columns, kind))
    errors = mean_error_matrices(evaluations)
    if errors:
        per_au = kind.per_au
        shown["confusion"] = plot_confusion(
            cooccurrence(kind.present(train_labels).astype(float)) if per_au else None, errors, names,
            "P(predict column | only row AU present)" if per_au else "P(predict column | true row)")
    return shown


def _shown_metrics(table_columns, kind: label_types.LabelType) -> list[str]:
    """What the console shows: the ranking metric, FDR and the correlated pairs' FDR (the CSVs hold the rest)."""
    return [m for m in (kind.primary_metric, "fdr_mean", "accuracy") if m in table_columns] + \
        [c for c in table_columns if c.startswith("pair_fdr/") and not c.endswith("_sd")]


def _header(metric: str) -> str:
    """``f1_mean`` -> 'F1 %', ``pair_fdr/AU2-AU3`` -> 'FDR AU2-AU3 %'."""
    if metric.startswith("pair_fdr/"):
        return f"FDR {metric.removeprefix('pair_fdr/')} %"
    name = metric.removesuffix("_mean").removesuffix("_macro")
    return f"{name.upper() if len(name) <= 3 else name} {'%' if metric.startswith(PERCENT) else ''}".strip()


def _mean_sd(mean: float, sd: float, seeds: int) -> str:
    """'12.34 ± 0.56'; one seed has no spread to show, and a metric no seed could score shows as 'n/a'."""
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.2f}" if seeds < 2 else f"{mean:.2f} ± {sd:.2f}"


def format_table(table: pd.DataFrame, kind: label_types.LabelType) -> pd.DataFrame:
    """The headline metrics as 'mean ± sd' over seeds, in percent as the thesis reports them."""
    shown = pd.DataFrame(index=table.index)
    for metric in _shown_metrics(table.columns, kind):
        factor = 100 if metric.startswith((*PERCENT, "pair_fdr")) else 1
        shown[_header(metric)] = [_mean_sd(factor * m, factor * s, n)
                                  for m, s, n in zip(table[metric], table[f"{metric}_sd"], table["seeds"])]
    shown["seeds"] = table["seeds"].astype(int)
    if table["never_learnt"].any():
        shown["never learnt"] = table["never_learnt"].astype(int)
    return shown


def summary_markdown(table: pd.DataFrame, diffs: pd.DataFrame, kind: label_types.LabelType,
                     generated: dict | None, config: str) -> str:
    """What a person wants first: which strategy is best, the headline table with intervals over seeds,
    the differences to the baseline and how good the generated images were."""
    lines = [f"## {config}: {', '.join(table.index)} over {int(table['seeds'].max())} seeds",
             f"Best by {_header(kind.primary_metric)}: **{best_strategy(table, kind)}**.", "",
             format_table(table, kind).to_markdown(), ""]
    if diffs["vs_baseline"].any():
        lines += [f"Difference to {BASELINE.name}, paired by seed (percentage points, 95% interval, "
                  "* the interval excludes 0):", "", format_differences(diffs, kind).to_markdown(), ""]
    if generated:
        lines.append(f"Generated images: {100 * generated['pass_rate']:.1f}% pass the oracle "
                     f"(real single-label images: {100 * generated['real_pass_rate']:.1f}%).")
    if table["never_learnt"].any():
        lines.append("**Warning:** some classifiers never learnt (column 'never learnt'): their scores are not results.")
    return "\n".join(lines)
