"""The comparison DAG: dataset -> baseline (teacher) -> each strategy x seed -> comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
from prefect import flow

from ausynth.configs.loader import load_config, parameter_overrides
from ausynth.configs.schema import Strategy
from ausynth.tasks import prefect_tasks as t
from ausynth.tasks.outputs import new_output_dir
from ausynth.tasks.tracking import check_tracking, tracked_run, tracking_uri


@dataclass
class ComparisonResult:
    table: pd.DataFrame
    output_dir: str
    tracking_uri: str
    parent_run_id: str


@flow(name="ausynth-compare", log_prints=True)
def compare_strategies(
    config: str = "toy-quick",
    strategies: list[Strategy] | None = None,
    seeds: list[int] | None = None,
    difficulty: Literal["clean", "medium", "hard"] | None = None,
    labelled: int | None = None,
    augment_size: int | None = None,
    max_epochs: int | None = None,
    device: Literal["auto", "cpu", "cuda"] | None = None,
    overrides: list[str] | None = None,
) -> ComparisonResult:
    """Run every configured strategy with every seed and compare them in MLflow.

    ``config`` is a YAML path or a built-in config name. The other fields, when set, replace the
    config's value; ``overrides`` takes any other ``dotted.key=value`` setting.
    """
    form = parameter_overrides(strategies=strategies, seeds=seeds, dataset__difficulty=difficulty,
                               dataset__labelled=labelled, augment__size=augment_size,
                               classifier__max_epochs=max_epochs, device=device)
    cfg = load_config(config, [*form, *(overrides or [])])
    check_tracking(tracking_uri(cfg))  # a down MLflow server fails here, not after the training
    output_dir = new_output_dir(cfg)
    with tracked_run(cfg, output_dir) as (_, parent_id):
        dataset = t.build_dataset(cfg)
        t.dataset_report(cfg, dataset, parent_id, output_dir)
        needs_teacher = {"pseudo_label", "generator"} & set(cfg.strategies)
        teacher = t.train_classifier(cfg, dataset, "supervised", cfg.seeds[0]) if needs_teacher else None
        generated = None
        if "generator" in cfg.strategies:
            generator = t.train_generator(cfg, dataset, teacher, parent_id)
            oracle = t.train_oracle(cfg, dataset)
            generated = t.generate_isolated(cfg, dataset, generator, teacher, oracle, parent_id)
        evaluations = [
            t.evaluate(cfg, dataset, t.train_classifier(cfg, dataset, strategy, seed, teacher, generated), parent_id,
                       strategy, seed)
            for strategy in cfg.strategies for seed in cfg.seeds
        ]
        table = t.publish_comparison(cfg, dataset, evaluations, parent_id, output_dir)
    return ComparisonResult(table, str(output_dir), tracking_uri(cfg), parent_id)
