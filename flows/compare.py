"""The comparison DAG: dataset -> baseline (teacher) -> pool scores -> generator -> each strategy x seed -> comparison."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import pandas as pd
from prefect import flow

from ausynth.configs.loader import load_config, parameter_overrides
from ausynth.tasks import prefect_tasks as t
from ausynth.tasks.outputs import new_output_dir
from ausynth.tasks.preflight import check_inputs
from ausynth.tasks.strategies import BASELINE, STRATEGIES, Inputs
from ausynth.tasks.tracking import Tracker, check_tracking, tracked_run

StrategyName = Literal[tuple(STRATEGIES)]  # the form's choice list follows the registry


@dataclass
class ComparisonResult:
    table: pd.DataFrame  # strategy rows: metric means and standard deviations over seeds
    differences: pd.DataFrame  # paired differences over seeds between strategies, with 95% intervals
    label_type: str
    output_dir: str
    tracking_uri: str
    parent_run_id: str


@flow(name="ausynth-compare", log_prints=True)
def compare_strategies(
    config: str = "toy-quick",
    strategies: list[StrategyName] | None = None,
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
    tracker = Tracker(cfg)
    check_tracking(tracker.uri)  # a down MLflow server fails here, not after the training
    output_dir = new_output_dir(cfg)
    with tracked_run(tracker, output_dir) as parent_id:
        dataset = t.dataset_task(cfg)
        check_inputs(cfg, dataset)
        t.dataset_report_task(cfg, dataset, parent_id, output_dir)
        chosen = [STRATEGIES[name] for name in cfg.strategies]
        inputs = Inputs(dataset)
        if any(s.needs_pool_scores for s in chosen):
            teacher = t.classifier_task(cfg, BASELINE.name, cfg.seeds[0], inputs)
            inputs = replace(inputs, pool_scores=t.pool_scores_task(cfg, dataset, teacher))
        if any(s.needs_generated for s in chosen):
            generator = t.generator_task(cfg, dataset, inputs.pool_scores, parent_id)
            oracle = t.oracle_task(cfg, dataset)
            inputs = replace(inputs, generated=t.generated_task(cfg, dataset, generator, inputs.pool_scores, oracle,
                                                                parent_id))
        evaluations = [
            t.evaluation_task(cfg, dataset, t.classifier_task(cfg, name, seed, inputs), parent_id, name, seed)
            for name in cfg.strategies for seed in cfg.seeds
        ]
        tables = t.publish_task(cfg, dataset, evaluations, parent_id, output_dir)
    return ComparisonResult(tables["comparison"], tables["differences"], evaluations[0].label_type,
                            str(output_dir), tracker.uri, parent_id)
