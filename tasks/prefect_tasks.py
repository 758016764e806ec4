"""Prefect tasks: thin wrappers that add names, retries and a timing line to the plain stages.

Reuse of finished work comes from the content-addressed store inside each stage (a re-run
with an unchanged config finds its datasets and models there, a changed one does not), so
Prefect's own result caching is off: it would only pickle folder paths a second time.

Every task starts in ``stage``, which applies the run's execution settings (``tasks/execution.py``):
its torch/OpenMP threads and, on the ``threads`` runner, its turn to compute (and to use the GPU).
Every task takes the config first and everything it needs as arguments, so it runs the same in
the flow's thread, on a worker thread or in a Dask worker process.

Only tasks that talk to the MLflow server retry, and only on errors that may pass
(``tracking.transient``): a config or data error fails once. A retried task duplicates nothing:
stages are store entries, and the tracker finds the runs and models a failed try left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from ausynth.configs.schema import ExperimentConfig
from ausynth.tasks import classifiers, compare, datasets, generator_stage
from ausynth.tasks.execution import task_started
from ausynth.tasks.classifiers import Evaluation
from ausynth.tasks.dataset_report import write_dataset_report
from ausynth.tasks.store import StoredItem
from ausynth.tasks.strategies import Inputs, strategy
from ausynth.tasks.tracking import Tracker, test_metric_name, transient

log = logging.getLogger("ausynth")


def retry_transient(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry only what failed on I/O with a server."""
    return isinstance(state.data, BaseException) and transient(state.data)


RETRY = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": retry_transient}


# The tasks that train on the GPU when the run has one: they take it one at a time (tasks/execution.py).
GPU_TASKS = frozenset({"train-classifier", "train-oracle", "train-generator"})


def stage_task(name: str, run_name: str | None = None, **options):
    """A stage as a Prefect task, its runs named by what they do (``train-supervised-seed0``), not with
    Prefect's random suffix."""
    return task(name=name, task_run_name=run_name or name, cache_policy=NO_CACHE, **options)


@contextmanager
def stage(cfg: ExperimentConfig, name: str) -> Iterator[None]:
    """Run a stage under the run's execution settings; log one line when it ends, with its wall time."""
    context = TaskRunContext.get()
    with task_started(cfg.execution, gpu=context is not None and context.task.name in GPU_TASKS):
        start = time.perf_counter()
        yield
        log.info("stage %s done in %.1f s", name, time.perf_counter() - start)


@stage_task("build-dataset")
def dataset_task(cfg: ExperimentConfig) -> StoredItem:
    with stage(cfg, "build-dataset"):
        return datasets.prepare_dataset(cfg)


@stage_task("dataset-report", **RETRY)
def dataset_report_task(cfg: ExperimentConfig, dataset: StoredItem, run_id: str, output_dir: Path) -> None:
    """Counts, label prevalence, co-occurrence, example images (and face detection results) on the run."""
    with stage(cfg, "dataset-report"):
        sets = {name: datasets.load_set(dataset, name) for name in datasets.IMAGE_SETS}
        reports = {p.stem: pd.read_csv(p, keep_default_na=False) for p in sorted((dataset.path / "reports").glob("*.csv"))}
        folder = output_dir / "dataset"
        summary = write_dataset_report(sets, folder, reports or None)
        tracker = Tracker(cfg)
        tracker.log_params(run_id, {f"dataset.{k}": v for k, v in summary.items()})
        tracker.log_folder(run_id, folder, "dataset")


@stage_task("train-classifier", "train-{strategy_name}-seed{seed}")
def classifier_task(cfg: ExperimentConfig, strategy_name: str, seed: int, dataset: StoredItem,
                    pool_scores: StoredItem | None = None, generated: StoredItem | None = None) -> StoredItem:
    """One (strategy, seed) classifier; ``pool_scores`` and ``generated`` only for strategies that need them,
    so that the others need not wait for them."""
    with stage(cfg, f"train {strategy_name} seed {seed}"):
        return classifiers.fit_classifier(cfg, strategy(strategy_name), seed, Inputs(dataset, pool_scores, generated))


@stage_task("score-pool")
def pool_scores_task(cfg: ExperimentConfig, dataset: StoredItem, teacher: StoredItem) -> StoredItem:
    with stage(cfg, "score the unlabelled pool with the teacher"):
        return classifiers.score_pool(cfg, dataset, teacher)


@stage_task("train-oracle")
def oracle_task(cfg: ExperimentConfig, dataset: StoredItem) -> StoredItem:
    with stage(cfg, "train oracle"):
        return generator_stage.fit_oracle(cfg, dataset)


@stage_task("train-generator", **RETRY)  # a retry resumes from the last checkpoint
def generator_task(cfg: ExperimentConfig, dataset: StoredItem, pool_scores: StoredItem, run_id: str) -> StoredItem:
    with stage(cfg, f"train generator ({cfg.generator.kind})"):
        tracker = Tracker(cfg)

        def on_log(step: int, metrics: dict[str, float], image: Path | None) -> None:
            tracker.log_metrics(run_id, {f"gan/{k}": v for k, v in metrics.items()}, step=step)
            if image is not None:
                tracker.client.log_artifact(run_id, str(image), "gan/samples")

        generator = generator_stage.fit_generator(cfg, dataset, pool_scores, on_log)
        tracker.set_tags(run_id, {"generator_checkpoint": str(generator.path)})
        return generator


@stage_task("generate-isolated", **RETRY)
def generated_task(cfg: ExperimentConfig, dataset: StoredItem, generator: StoredItem, pool_scores: StoredItem,
                   oracle: StoredItem, run_id: str) -> StoredItem:
    """Single-label images, with the oracle's verdict logged on the run."""
    with stage(cfg, "generate single-label images"):
        generated = generator_stage.make_isolated(cfg, dataset, generator, pool_scores, oracle)
        summary = pd.read_json(generated.path / "summary.json", typ="series")
        tracker = Tracker(cfg)
        tracker.log_metrics(run_id, {f"generated/{k}": float(v) for k, v in summary.items()
                                     if isinstance(v, (int, float))})
        for name in ("quality.csv", "sources.csv", "examples.png", "summary.json"):
            if (generated.path / name).is_file():  # a kind that draws from noise has no sources.csv
                tracker.client.log_artifact(run_id, str(generated.path / name), "generated")
        log.info("generated %d images; %.1f%% show the target label and no other", summary["images"],
                 100 * summary["pass_rate"])
        return generated


@stage_task("evaluate", "evaluate-{strategy_name}-seed{seed}", **RETRY)
def evaluation_task(cfg: ExperimentConfig, dataset: StoredItem, model: StoredItem, parent_run_id: str,
                    strategy_name: str, seed: int) -> Evaluation:
    """Test one classifier and log it, once, as a child run of the comparison."""
    with stage(cfg, f"evaluate {strategy_name} seed {seed}"):
        result = classifiers.evaluate(cfg, dataset, model)
        tracker = Tracker(cfg)
        # the child run spans the classifier's training (times in its info; older entries lack them: now)
        start_ms, end_ms = result.info.get("training_ms", (None, None))
        run_id, complete = tracker.child_run(parent_run_id, strategy_name, seed, start_ms)
        if not complete:
            _log_evaluation(tracker, run_id, result, model)
        tracker.complete(run_id, end_ms)
        result.info.update(run_id=run_id)
        return result


def _log_evaluation(tracker: Tracker, run_id: str, result: Evaluation, model: StoredItem) -> None:
    info = result.info
    tracker.log_params(run_id, {"strategy": result.strategy, "seed": result.seed, "n_train": info["n_train"],
                                "n_added": info["n_added"], "label_type": result.label_type, "device": info["device"]})
    tracker.set_tags(run_id, {"model_dir": str(model.path)})
    tracker.log_series(run_id, [(epoch, {key.replace("_", "/", 1): v for key, v in record.items()})
                                for epoch, record in enumerate(result.history, start=1)])
    summary = compare.kind_of([result]).summary_metrics
    tracker.log_metrics(run_id, {
        **{test_metric_name(k, summary): v for k, v in result.metrics.items()},
        "train/best_epoch": info["best_epoch"], "train/epochs": info["epochs"],
        "train/images_per_s": info["images_per_second"], "train/never_learnt": float(info["never_learnt"])})


@stage_task("compare", **RETRY)
def publish_task(cfg: ExperimentConfig, dataset: StoredItem, evaluations: list[Evaluation],
                 parent_run_id: str, output_dir: Path) -> dict[str, pd.DataFrame]:
    """Every child run's classifier as an MLflow model; the comparison, the paired differences and the
    per-seed tables, and the figures, in the run folder and on the parent run; the best model registered.
    Returns the tables."""
    with stage(cfg, "compare"):
        labelled = datasets.load_set(dataset, "labelled")
        table = compare.comparison_table(evaluations)
        tracker = Tracker(cfg)
        _log_models(tracker, dataset, evaluations)
        tracker.log_metrics(parent_run_id, compare.table_metrics(table))
        tables = {"comparison": table, "differences": compare.differences(evaluations),
                  "per_seed": compare.per_seed_table(evaluations)}
        tracker.log_outputs(parent_run_id, output_dir, tables,
                            compare.figures(evaluations, labelled.labels, labelled.label_columns))
        kind = compare.kind_of(evaluations)
        best = compare.best_strategy(table, kind)
        chosen = max((e for e in evaluations if e.strategy == best), key=lambda e: e.metrics[kind.primary_metric])
        score = chosen.metrics[kind.primary_metric]
        summary = {m: f"{chosen.metrics[m]:.4f}" for m in kind.summary_metrics if m in chosen.metrics}
        tracker.register(parent_run_id, f"{cfg.experiment}-au-classifier", chosen.info["run_id"],
                         chosen.info["model_uri"], score, dataset.key,
                         {"config": cfg.name, "strategy": best, "seed": str(chosen.seed), **summary})
        tracker.describe(parent_run_id, compare.summary_markdown(
            table, tables["differences"], kind, _generated_summary(tracker, parent_run_id), cfg.name))
        return tables


def _log_models(tracker: Tracker, dataset: StoredItem, evaluations: list[Evaluation]) -> None:
    """Each child run's classifier as an MLflow model (once per run; its URI in ``info["model_uri"]``).

    Logged here, when every training has ended, and not in the evaluation tasks: MLflow saves the
    model with torch.export, which switches oneDNN and cuDNN off for the whole process while it
    traces, so a training running beside it on another thread would compute other last bits and
    end with other weights than a sequential run's.
    """
    example = datasets.example_input(dataset)
    for result in evaluations:
        result.info["model_uri"] = tracker.log_classifier(
            result.info["run_id"], result.model, example, f"au-classifier-{result.strategy}-seed{result.seed}",
            {key: result.info[key] for key in classifiers.PREDICT_KEYS})


def _generated_summary(tracker: Tracker, run_id: str) -> dict | None:
    """The generated images' pass rates, as the generation task logged them on the parent run."""
    logged = tracker.client.get_run(run_id).data.metrics
    if "generated/pass_rate" not in logged:
        return None
    return {"pass_rate": logged["generated/pass_rate"], "real_pass_rate": logged.get("generated/real_pass_rate", 0.0)}


def link_prefect_and_mlflow(tracker: Tracker, parent_run_id: str) -> None:
    """The parent run's summary as a Prefect artifact of the calling flow run, with a link to the MLflow
    run, and the MLflow run tagged with the flow run. Called from the flow a user started (not from the
    DAG's subflow), so the artifact shows up on the run the user looks at."""
    url = tracker.run_url(parent_run_id)
    mlflow_link = (f"[MLflow parent run {parent_run_id}]({url})" if url else
                   f"MLflow parent run `{parent_run_id}` in `{tracker.uri}` (open it with "
                   f"`mlflow ui --backend-store-uri {tracker.uri} --workers 1`)")
    if flow_run.id:
        ui = flow_run.ui_url or ""  # an ephemeral API has no UI: no URL to point at
        tracker.set_tags(parent_run_id, {"prefect.flow_run_id": flow_run.id,
                                         **({"prefect.flow_run_url": ui} if ui.startswith("http") else {})})
    create_markdown_artifact(f"{tracker.description(parent_run_id)}\n\n{mlflow_link}", key="comparison",
                             description="Strategy comparison and a link to its MLflow run")
