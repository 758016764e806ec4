"""Aggregate (strategy, seed) evaluations into the comparison table and its pictures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files and MLflow, never to a screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ausynth.tasks.metrics import PER_OUTPUT_METRIC, PRIMARY_METRIC, SUMMARY_METRICS, cooccurrence  # noqa: E402
from ausynth.tasks.pipeline import Evaluation  # noqa: E402
from ausynth.tasks.tracking import log_metrics  # noqa: E402

PERCENT = ("f1", "fdr", "precision", "recall", "accuracy")  # metric prefixes shown in %, as the thesis does


def label_type(evaluations: list[Evaluation]) -> str:
    return evaluations[0].label_type


def primary_column(evaluations: list[Evaluation]) -> str:
    """The comparison table's column that ranks strategies (higher is better)."""
    return f"{PRIMARY_METRIC[label_type(evaluations)]}_mean"


def comparison_table(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Strategy rows; mean and std over seeds of each summary metric, plus the seed count."""
    metrics = SUMMARY_METRICS[label_type(evaluations)]
    rows = pd.DataFrame([{"strategy": e.strategy, "seed": e.seed, **{m: e.metrics.get(m, np.nan) for m in metrics}}
                         for e in evaluations])
    order = list(dict.fromkeys(rows["strategy"]))
    grouped = rows.groupby("strategy", sort=False)[list(metrics)]
    table = grouped.agg(["mean", "std"]).reindex(order)
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["seeds"] = rows.groupby("strategy", sort=False).size().reindex(order)
    return table.fillna(0.0)  # one seed has no spread: 0, not NaN


def table_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The table as flat MLflow metrics, e.g. ``pseudo_label.f1_mean_mean``."""
    return {f"{strategy}.{column}": float(value) for strategy, row in table.iterrows()
            for column, value in row.items()}


def per_output(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Output rows (AUs, emotions, ...) x strategy columns: the type's per-output metric, mean over seeds."""
    metric = PER_OUTPUT_METRIC[label_type(evaluations)]
    frames = [e.per_au[metric].rename(e.strategy) for e in evaluations]
    return pd.concat(frames, axis=1).T.groupby(level=0, sort=False).mean().T


def plot_per_output(values: pd.DataFrame, metric: str) -> Figure:
    fig, ax = plt.subplots(figsize=(max(6, len(values) * 0.9), 4))
    values.plot.bar(ax=ax, width=0.8)
    ax.set_ylim(min(0, float(values.min().min())), 1)
    ax.set_ylabel(f"{metric} (mean over seeds)")
    ax.set_title(f"Per-output {metric} by strategy")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def _heatmap(ax, matrix: np.ndarray, names: list[str], title: str) -> None:
    image = ax.imshow(matrix, vmin=0, vmax=max(float(matrix.max()), 1e-6), cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize="small")
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.set_title(title, fontsize="medium")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)


def plot_confusion(cooccurrence: np.ndarray | None, errors_by_strategy: dict[str, np.ndarray], names: list[str],
                   title: str) -> Figure:
    """Training-set co-occurrence (AUs) beside each strategy's error matrix at test."""
    panels = [("train: P(col | row)", cooccurrence)] if cooccurrence is not None else []
    panels += [(f"{strategy}: {title}", matrix) for strategy, matrix in errors_by_strategy.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], panels):
        _heatmap(ax, matrix, names, name)
    fig.tight_layout()
    return fig


def mean_error_matrices(evaluations: list[Evaluation]) -> dict[str, np.ndarray]:
    by_strategy: dict[str, list[np.ndarray]] = {}
    for e in evaluations:
        if e.fp_matrix is not None:
            by_strategy.setdefault(e.strategy, []).append(e.fp_matrix)
    return {s: np.mean(ms, axis=0) for s, ms in by_strategy.items()}


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each metric as 'mean ± std'; F1, FDR and the like in percent, the way the thesis reports them."""
    shown = pd.DataFrame(index=table.index)
    for metric in [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean") and c != "seeds"]:
        factor, unit = (100, " %") if metric.startswith(PERCENT) else (1, "")
        shown[f"{metric.removesuffix('_mean')}{unit}"] = [f"{factor * m:.2f} ± {factor * s:.2f}" for m, s in
                                                          zip(table[f"{metric}_mean"], table[f"{metric}_std"])]
    shown["seeds"] = table["seeds"].astype(int)
    return shown


def publish(client, run_id: str, evaluations: list[Evaluation], train_labels: np.ndarray, names: list[str],
            output_dir: Path) -> pd.DataFrame:
    """Write the table, per-seed rows and plots to ``output_dir`` and log them on the parent run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    table = comparison_table(evaluations)
    table.to_csv(output_dir / "comparison.csv")
    training = ("best_epoch", "n_train", "images_per_second")
    per_seed = pd.DataFrame([{"strategy": e.strategy, "seed": e.seed, **{k: e.info[k] for k in training}, **e.metrics}
                             for e in evaluations])
    per_seed.to_csv(output_dir / "per_seed.csv", index=False)
    kind = label_type(evaluations)
    figures = {"per_au_f1.png" if kind == "au_presence" else "per_output.png":
               plot_per_output(per_output(evaluations), PER_OUTPUT_METRIC[kind])}
    errors = mean_error_matrices(evaluations)
    if errors:
        is_au = kind == "au_presence"
        figures["au_confusion.png" if is_au else "confusion.png"] = plot_confusion(
            cooccurrence(train_labels) if is_au else None, errors, names,
            "FP rate, only row true" if is_au else "P(predicted col | true row)")
    for name, fig in figures.items():
        fig.savefig(output_dir / name, dpi=110)
        plt.close(fig)
    log_metrics(client, run_id, table_metrics(table))
    for path in sorted(output_dir.iterdir()):
        if path.is_file():
            client.log_artifact(run_id, str(path))
    return table
