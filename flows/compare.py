"""The comparison DAG: dataset -> baseline (teacher) -> pool scores -> generator -> each strategy x seed -> comparison.

``compare_strategies`` loads the config, checks what must fail before any work (the MLflow store,
a Dask scheduler's address), opens the parent MLflow run and runs ``comparison_dag`` as a subflow
on the task runner that ``execution.task_runner`` names (``tasks/execution.py``). The DAG submits
every task with its inputs; independent ones run at once on the ``threads`` and ``dask`` runners
(the (strategy, seed) trainings and evaluations, the oracle beside the generator, the dataset
report beside training), and in this order, one at a time, on the ``sequential`` one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from ausynth.configs.loader import load_for_run, parameter_overrides
from ausynth.configs.schema import ExperimentConfig
from ausynth.flows.form import AS_CONFIGURED, ConfigName, Device, Difficulty, StrategyName
from ausynth.tasks import prefect_tasks as t
from ausynth.tasks.execution import Submitter, effective, execution_for, run_in
from ausynth.tasks.outputs import new_output_dir
from ausynth.tasks.preflight import check_inputs
from ausynth.tasks.strategies import BASELINE, STRATEGIES, Strategy
from ausynth.tasks.tracking import Tracker, check_tracking, tracked_run


@dataclass
class ComparisonResult:
    table: pd.DataFrame  # strategy rows: metric means and standard deviations over seeds
    differences: pd.DataFrame  # paired differences over seeds between strategies, with 95% intervals
    label_type: str
    output_dir: str
    tracking_uri: str
    parent_run_id: str


def run_name(cfg: ExperimentConfig) -> str:
    """What runs, as the Prefect UI lists it: 'toy-quick: supervised, generator x seeds 0, 1'."""
    return f"{cfg.name}: {', '.join(cfg.strategies)} x seeds {', '.join(map(str, cfg.seeds))}"


def _name_flow_run(cfg: ExperimentConfig) -> None:
    """Name the running flow run once its config is read, whichever form fields were left to the config."""
    if flow_run.id:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=run_name(cfg))


@flow(name="ausynth-compare", log_prints=True)
def compare_strategies(
    config: ConfigName = "toy-quick",
    strategies: list[StrategyName] = [],  # noqa: B006 - the form needs JSON defaults
    seeds: list[int] = [],
    difficulty: Difficulty = AS_CONFIGURED,
    labelled: int = 0,
    augment_size: int = 0,
    max_epochs: int = 0,
    device: Device = AS_CONFIGURED,
    overrides: list[str] = [],
) -> ComparisonResult:
    """Run every configured strategy with every seed and compare them in MLflow.

    Args:
        config: a built-in config, or the path of a YAML file on the machine that runs the flow
        strategies: the strategies to compare, the baseline first; empty: the config's
        seeds: one classifier per strategy and seed; empty: the config's
        difficulty: toy data only: the noise level of the generated toy images
        labelled: how many labelled training images to use; 0: the config's
        augment_size: how many images each augmentation strategy adds; 0: the config's
        max_epochs: the classifiers' epoch cap; 0: the config's
        device: where to train (auto: CUDA when there is one)
        overrides: any other setting as dotted.key=value, e.g. execution.task_runner=dask
    """
    form = parameter_overrides(strategies=strategies, seeds=seeds, dataset__difficulty=difficulty,
                               dataset__labelled=labelled, augment__size=augment_size,
                               classifier__max_epochs=max_epochs, device=device)
    cfg = effective(load_for_run(config, [*form, *overrides]))
    _name_flow_run(cfg)
    tracker = Tracker(cfg)
    check_tracking(tracker.uri)  # a down MLflow server fails here, not after the training
    execution = execution_for(cfg)  # so does a Dask scheduler address nobody answers
    output_dir = new_output_dir(cfg)
    with tracked_run(tracker, output_dir) as parent_id:
        tables, label_type = run_in(execution, comparison_dag, cfg, parent_id, output_dir)
        t.link_prefect_and_mlflow(tracker, parent_id)
    return ComparisonResult(tables["comparison"], tables["differences"], label_type, str(output_dir), tracker.uri,
                            parent_id)


def _dag_run_name() -> str:
    return run_name(flow_run.parameters["cfg"])


@flow(name="ausynth-comparison-dag", flow_run_name=_dag_run_name, validate_parameters=False)
def comparison_dag(cfg: ExperimentConfig, parent_id: str, output_dir: Path) -> tuple[dict[str, pd.DataFrame], str]:
    """Every task of one comparison, submitted in dependency order; returns the publish task's tables and the
    label type."""
    execution = execution_for(cfg, check=False)
    execution.dag_started()
    submit = Submitter(execution, t.GPU_TASKS)
    dataset = t.dataset_task(cfg)  # everything needs it, and the checks below read it
    check_inputs(cfg, dataset)
    submit(t.dataset_report_task, cfg, dataset, parent_id, output_dir)
    chosen = [STRATEGIES[name] for name in cfg.strategies]
    models, pool_scores, generated = {}, None, None
    if any(s.needs_pool_scores for s in chosen):
        teacher = models[BASELINE.name, cfg.seeds[0]] = submit(t.classifier_task, cfg, BASELINE.name, cfg.seeds[0],
                                                                dataset)
        pool_scores = submit(t.pool_scores_task, cfg, dataset, teacher)
    if any(s.needs_generated for s in chosen):
        generator = submit(t.generator_task, cfg, dataset, pool_scores, parent_id)
        oracle = submit(t.oracle_task, cfg, dataset)
        generated = submit(t.generated_task, cfg, dataset, generator, pool_scores, oracle, parent_id)
    evaluations = {}
    for strategy, seed in longest_first(chosen, cfg.seeds):
        needs = (pool_scores if strategy.needs_pool_scores else None, generated if strategy.needs_generated else None)
        model = models.get((strategy.name, seed)) or submit(t.classifier_task, cfg, strategy.name, seed, dataset,
                                                             *needs)
        evaluations[strategy.name, seed] = submit(t.evaluation_task, cfg, dataset, model, parent_id, strategy.name,
                                                  seed)
    in_order = [evaluations[name, seed] for name in cfg.strategies for seed in cfg.seeds]
    tables = submit(t.publish_task, cfg, dataset, in_order, parent_id, output_dir)
    submit.wait()
    return tables.result(), in_order[0].result().label_type


def longest_first(strategies: list[Strategy], seeds: list[int]) -> list[tuple[Strategy, int]]:
    """The (strategy, seed) trainings in the order they are submitted, which is the order they start in when
    they wait for a worker: the baseline's last. The other strategies train on ``augment.size`` more images
    (4x the baseline's at the thesis' sizes), so the short baseline trainings fill the workers' last gaps
    instead of one worker idling behind a long training (93 s of 1,959 at 3K hard when they went first)."""
    return sorted(((s, seed) for s in strategies for seed in seeds), key=lambda pair: pair[0].name == BASELINE.name)
