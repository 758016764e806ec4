"""Aggregate (strategy, seed) evaluations into the comparison table and its pictures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files and MLflow, never to a screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ausynth.tasks.metrics import cooccurrence  # noqa: E402
from ausynth.tasks.pipeline import Evaluation  # noqa: E402
from ausynth.tasks.tracking import log_metrics  # noqa: E402

SUMMARY_METRICS = ("f1_mean", "fdr_mean", "precision_mean", "recall_mean")


def comparison_table(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Strategy rows; mean and std over seeds of each summary metric, plus the seed count."""
    rows = pd.DataFrame([{"strategy": e.strategy, "seed": e.seed, **{m: e.metrics[m] for m in SUMMARY_METRICS}}
                         for e in evaluations])
    order = list(dict.fromkeys(rows["strategy"]))
    grouped = rows.groupby("strategy", sort=False)[list(SUMMARY_METRICS)]
    table = grouped.agg(["mean", "std"]).reindex(order)
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["seeds"] = rows.groupby("strategy", sort=False).size().reindex(order)
    return table.fillna(0.0)  # one seed has no spread: 0, not NaN


def table_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The table as flat MLflow metrics, e.g. ``pseudo_label.f1_mean_mean``."""
    return {f"{strategy}.{column}": float(value) for strategy, row in table.iterrows()
            for column, value in row.items()}


def per_au_f1(evaluations: list[Evaluation]) -> pd.DataFrame:
    """AU rows x strategy columns: F1 averaged over seeds."""
    frames = [e.per_au["f1"].rename(e.strategy) for e in evaluations]
    return pd.concat(frames, axis=1).T.groupby(level=0, sort=False).mean().T


def plot_per_au_f1(f1: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(max(6, len(f1) * 0.9), 4))
    f1.plot.bar(ax=ax, width=0.8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 (mean over seeds)")
    ax.set_title("Per-AU F1 by strategy")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def _heatmap(ax, matrix: np.ndarray, names: list[str], title: str) -> None:
    image = ax.imshow(matrix, vmin=0, vmax=max(float(matrix.max()), 1e-6), cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize="small")
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.set_title(title, fontsize="medium")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)


def plot_confusion(cooccurrence: np.ndarray, fp_by_strategy: dict[str, np.ndarray], names: list[str]) -> Figure:
    """Training-set co-occurrence beside each strategy's false-positive matrix at test."""
    panels = 1 + len(fp_by_strategy)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4))
    _heatmap(axes[0], cooccurrence, names, "train: P(col | row)")
    for ax, (strategy, matrix) in zip(axes[1:], fp_by_strategy.items()):
        _heatmap(ax, matrix, names, f"{strategy}: FP rate, only row true")
    fig.tight_layout()
    return fig


def mean_fp_matrices(evaluations: list[Evaluation]) -> dict[str, np.ndarray]:
    by_strategy: dict[str, list[np.ndarray]] = {}
    for e in evaluations:
        by_strategy.setdefault(e.strategy, []).append(e.fp_matrix)
    return {s: np.mean(ms, axis=0) for s, ms in by_strategy.items()}


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """F1 / FDR in percent as 'mean ± std', the way the thesis reports them."""
    shown = pd.DataFrame(index=table.index)
    for metric, label in (("f1_mean", "F1 %"), ("fdr_mean", "FDR %"), ("precision_mean", "precision %"),
                          ("recall_mean", "recall %")):
        shown[label] = [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in
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
    figures = {"per_au_f1.png": plot_per_au_f1(per_au_f1(evaluations)),
               "au_confusion.png": plot_confusion(cooccurrence(train_labels), mean_fp_matrices(evaluations), names)}
    for name, fig in figures.items():
        fig.savefig(output_dir / name, dpi=110)
        plt.close(fig)
    log_metrics(client, run_id, table_metrics(table))
    for path in sorted(output_dir.iterdir()):
        if path.is_file():
            client.log_artifact(run_id, str(path))
    return table
