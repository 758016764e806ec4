"""Prefect tasks: thin wrappers that add names, retries and a timing line to the plain stages.

Reuse of finished work comes from the content-addressed store inside each stage (a re-run
with an unchanged config finds its datasets and models there, a changed one does not), so
Prefect's own result caching is off: it would only pickle folder paths a second time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from ausynth.configs.schema import ExperimentConfig
from ausynth.tasks import compare, generator_stage, pipeline, tracking
from ausynth.tasks.dataset_report import log_dataset_report, write_dataset_report
from ausynth.tasks.pipeline import Evaluation, StoredItem
from ausynth.tasks.train_generator import CHECKPOINT

log = logging.getLogger("ausynth")


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log one line when a stage ends, with its wall time."""
    start = time.perf_counter()
    yield
    log.info("stage %s done in %.1f s", name, time.perf_counter() - start)


@task(name="build-dataset", cache_policy=NO_CACHE)
def build_dataset(cfg: ExperimentConfig) -> StoredItem:
    with stage("build-dataset"):
        return pipeline.prepare_dataset(cfg)


@task(name="dataset-report", cache_policy=NO_CACHE, retries=2)
def dataset_report(cfg: ExperimentConfig, dataset: StoredItem, run_id: str, output_dir: Path) -> None:
    """Counts, label prevalence, co-occurrence, example images (and face detection results) in MLflow."""
    with stage("dataset-report"):
        sets = {name: pipeline.load_split(dataset, name) for name in pipeline.SPLITS}
        reports_dir = dataset.path / "reports"
        reports = {p.stem: pd.read_csv(p, keep_default_na=False) for p in sorted(reports_dir.glob("*.csv"))}
        folder = output_dir / "dataset"
        write_dataset_report(sets, folder, reports or None)
        log_dataset_report(tracking.client_for(cfg), run_id, folder)


@task(name="train-classifier", task_run_name="train-{strategy}-seed{seed}", cache_policy=NO_CACHE, retries=1)
def train_classifier(cfg: ExperimentConfig, dataset: StoredItem, strategy: str, seed: int,
                     teacher: StoredItem | None = None, generated: StoredItem | None = None) -> StoredItem:
    with stage(f"train {strategy} seed {seed}"):
        return pipeline.fit_classifier(cfg, dataset, strategy, seed, teacher, generated)


@task(name="train-oracle", cache_policy=NO_CACHE, retries=1)
def train_oracle(cfg: ExperimentConfig, dataset: StoredItem) -> StoredItem:
    with stage("train oracle"):
        return generator_stage.fit_oracle(cfg, dataset)


@task(name="train-generator", cache_policy=NO_CACHE, retries=1)  # a retry resumes from the last checkpoint
def train_generator(cfg: ExperimentConfig, dataset: StoredItem, teacher: StoredItem, run_id: str) -> StoredItem:
    with stage(f"train generator ({cfg.generator.kind})"):
        on_log = tracking.generator_logger(tracking.client_for(cfg), run_id)
        generator = generator_stage.fit_generator(cfg, dataset, teacher, on_log)
        tracking.client_for(cfg).set_tag(run_id, "generator_checkpoint", str(generator.path / CHECKPOINT))
        return generator


@task(name="generate-isolated", cache_policy=NO_CACHE, retries=1)
def generate_isolated(cfg: ExperimentConfig, dataset: StoredItem, generator: StoredItem, teacher: StoredItem,
                      oracle: StoredItem, run_id: str) -> StoredItem:
    """AU-isolated images, with the oracle's verdict logged on the run."""
    with stage("generate AU-isolated images"):
        generated = generator_stage.make_isolated(cfg, dataset, generator, teacher, oracle)
        summary = tracking.log_generated(tracking.client_for(cfg), run_id, generated.path)
        log.info("generated %d images; %.1f%% show the target AU and no other", summary["images"],
                 100 * summary["pass_rate"])
        return generated


@task(name="evaluate", task_run_name="evaluate-{strategy}-seed{seed}", cache_policy=NO_CACHE, retries=2)
def evaluate(cfg: ExperimentConfig, dataset: StoredItem, model: StoredItem, parent_run_id: str,
             strategy: str, seed: int) -> Evaluation:
    """Test one classifier and log it as a child run of the comparison."""
    with stage(f"evaluate {strategy} seed {seed}"):
        result = pipeline.evaluate(cfg, dataset, model)
        keys = ("best_epoch", "n_train", "n_added", "images_per_second", "device", "label_type", "generated_from")
        params = {k: result.info[k] for k in keys}
        client = tracking.client_for(cfg)
        run_id = tracking.log_child(client, cfg, parent_run_id, strategy, seed, result.metrics, result.history,
                                    {**params, "model_dir": str(model.path)})
        example = pipeline.example_input(dataset)
        result.info.update(run_id=run_id, model_uri=tracking.log_classifier(run_id, result.model, example))
        return result


@task(name="compare", cache_policy=NO_CACHE, retries=2)
def publish_comparison(cfg: ExperimentConfig, dataset: StoredItem, evaluations: list[Evaluation],
                       parent_run_id: str, output_dir: Path) -> pd.DataFrame:
    with stage("compare"):
        labelled = pipeline.load_split(dataset, "labelled")
        client = tracking.client_for(cfg)
        table = compare.publish(client, parent_run_id, evaluations, labelled.labels, labelled.label_columns,
                                output_dir)
        primary = compare.primary_column(evaluations)
        best = {e.info["run_id"]: (e.metrics[primary.removesuffix("_mean")], e.info["model_uri"]) for e in evaluations
                if e.strategy == table[primary].idxmax()}
        tracking.register_best(client, parent_run_id, f"{cfg.experiment}-au-classifier", best)
        return table
