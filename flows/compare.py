"""The comparison DAG: dataset -> baseline (teacher) -> each strategy x seed -> comparison."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from prefect import flow

from ausynth.configs.loader import load_config
from ausynth.tasks import prefect_tasks as t
from ausynth.tasks.outputs import new_output_dir
from ausynth.tasks.tracking import comparison_run, tracking_uri


@dataclass
class ComparisonResult:
    table: pd.DataFrame
    output_dir: str
    tracking_uri: str
    parent_run_id: str


@flow(name="ausynth-compare", log_prints=True)
def compare_strategies(config: str = "toy-quick", overrides: list[str] | None = None) -> ComparisonResult:
    """Run every configured strategy with every seed and compare them in MLflow.

    ``config`` is a YAML path or a built-in config name; ``overrides`` are ``key=value`` strings.
    """
    cfg = load_config(config, overrides or [])
    output_dir = new_output_dir(cfg)
    with comparison_run(cfg, output_dir) as (_, parent_id):
        dataset = t.build_dataset(cfg)
        needs_teacher = "pseudo_label" in cfg.strategies
        teacher = t.train_classifier(cfg, dataset, "supervised", cfg.seeds[0]) if needs_teacher else None
        evaluations = [
            t.evaluate(cfg, dataset, t.train_classifier(cfg, dataset, strategy, seed, teacher), parent_id, strategy, seed)
            for strategy in cfg.strategies for seed in cfg.seeds
        ]
        table = t.publish_comparison(cfg, dataset, evaluations, parent_id, output_dir)
    return ComparisonResult(table, str(output_dir), tracking_uri(cfg), parent_id)
