"""A retried task duplicates nothing in MLflow, and only transient I/O errors are retried.

Prefect retries ``evaluation_task`` and ``publish_task`` when they fail talking to MLflow; the
retry runs the whole task body again. Calling the undecorated functions (``.fn``) twice is what a
retry after a failure at the very end of the first try does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from prefect import flow, task
from prefect.states import Failed

from ausynth.tasks import classifiers, datasets
from ausynth.tasks.errors import ConfigError, DataError
from ausynth.tasks.prefect_tasks import evaluation_task, publish_task, retry_transient
from ausynth.tasks.strategies import BASELINE, Inputs
from ausynth.tasks.tracking import COMPLETE, Tracker, transient

from conftest import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny config's dataset and its supervised seed-0 classifier."""
    from ausynth.configs.loader import load_config

    root = tmp_path_factory.mktemp("idempotence")
    cfg = load_config("toy-quick", [*TINY, "strategies=[supervised]", f"workspace={root / 'ws'}"])
    dataset = datasets.prepare_dataset(cfg)
    return cfg, dataset, classifiers.fit_classifier(cfg, BASELINE, 0, Inputs(dataset)), root


def runs_keyed(tracker: Tracker, parent_id: str, key: str):
    experiment = tracker.client.get_run(parent_id).info.experiment_id
    return tracker.client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}' and tags.run_key = '{key}'")


def logged_models(tracker: Tracker, run_id: str):
    experiment = tracker.client.get_run(run_id).info.experiment_id
    return tracker.client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")


def test_a_retried_evaluation_and_publication_log_everything_once(trained):
    cfg, dataset, model, root = trained
    tracker = Tracker(cfg)
    parent = tracker.start_parent(root / "out")
    first = evaluation_task.fn(cfg, dataset, model, parent, "supervised", 0)
    second = evaluation_task.fn(cfg, dataset, model, parent, "supervised", 0)

    (child,) = runs_keyed(tracker, parent, "supervised/seed0")
    assert first.info["run_id"] == second.info["run_id"] == child.info.run_id
    assert child.data.tags[COMPLETE] == "true" and child.info.status == "FINISHED"
    # each epoch's metrics once: a second logging pass would double every step of the history
    epochs = len(first.history)
    assert [m.step for m in tracker.client.get_metric_history(child.info.run_id, "val/loss")] == list(
        range(1, epochs + 1))
    assert len(tracker.client.get_metric_history(child.info.run_id, "test/f1_mean")) == 1

    publish_task.fn(cfg, dataset, [first], parent, root / "out")
    publish_task.fn(cfg, dataset, [second], parent, root / "out")
    (child,) = runs_keyed(tracker, parent, "supervised/seed0")
    assert first.info["model_uri"] == second.info["model_uri"] == child.data.tags["model_uri"]
    assert len(logged_models(tracker, child.info.run_id)) == 1
    # logging the model reopens the run: it ends finished again, at the end of its training
    assert child.info.status == "FINISHED" and child.info.end_time == first.info["training_ms"][1]
    name = f"{cfg.experiment}-au-classifier"
    (version,) = tracker.client.search_model_versions(f"name = '{name}'")
    assert version.run_id == child.info.run_id
    assert tracker.client.get_run(parent).data.tags["registered_model"] == f"{name}/{version.version}"
    assert (root / "out" / "comparison.csv").is_file()
    assert {"comparison.csv", "comparison.json", "per_seed.csv"} <= {a.path for a in tracker.client.list_artifacts(parent)}


def test_a_retried_publication_logs_each_table_once(trained):
    cfg, dataset, model, root = trained
    tracker = Tracker(cfg)
    parent = tracker.start_parent(root / "out-3")
    evaluation = evaluation_task.fn(cfg, dataset, model, parent, "supervised", 0)
    for _ in range(2):
        publish_task.fn(cfg, dataset, [evaluation], parent, root / "out-3")
    for table in ("comparison.json", "per_seed.json"):
        path = tracker.client.download_artifacts(parent, table, str(root / "downloaded"))
        assert len(json.loads(Path(path).read_text())["data"]) == 1, table  # one strategy, one seed


def test_an_incomplete_child_run_from_a_failed_try_is_replaced(trained):
    cfg, dataset, model, root = trained
    tracker = Tracker(cfg)
    parent = tracker.start_parent(root / "out-2")
    experiment = tracker.client.get_run(parent).info.experiment_id
    # a first try that died after creating its run, before marking it complete
    stale = tracker.client.create_run(experiment, tags={"mlflow.parentRunId": parent, "run_key": "supervised/seed0",
                                                        "strategy": "supervised", "seed": "0"}).info.run_id
    tracker.log_metrics(stale, {"test/f1_mean": -1.0})

    result = evaluation_task.fn(cfg, dataset, model, parent, "supervised", 0)
    (child,) = runs_keyed(tracker, parent, "supervised/seed0")
    assert child.info.run_id == result.info["run_id"] != stale
    assert child.data.tags[COMPLETE] == "true" and child.data.metrics["test/f1_mean"] != -1.0
    assert tracker.client.get_run(stale).info.lifecycle_stage == "deleted"
    publish_task.fn(cfg, dataset, [result], parent, root / "out-2")  # logs the model, on the new run only
    assert len(logged_models(tracker, child.info.run_id)) == 1 and not logged_models(tracker, stale)


@pytest.mark.parametrize("error, retried", [
    (requests.ConnectionError("connection refused"), True),
    (requests.Timeout("read timed out"), True),
    (ConnectionResetError("reset by peer"), True),
    (DataError("only 3 images"), False),
    (ConfigError("bad key"), False),
    (ValueError("a bug"), False),
])
def test_retry_transient_retries_only_io_with_a_server(error, retried):
    assert transient(error) is retried
    assert retry_transient(None, None, Failed(data=error)) is retried


def test_a_prefect_task_retries_a_connection_error_and_not_a_data_error():
    """The condition as Prefect calls it, on the state of a real failed task run."""
    calls = {"io": 0, "data": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def talks_to_a_server():
        calls["io"] += 1
        raise requests.ConnectionError("MLflow is restarting")

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def reads_bad_data():
        calls["data"] += 1
        raise DataError("a manifest row is bad")

    @flow
    def both():
        for step in (talks_to_a_server, reads_bad_data):
            with pytest.raises((requests.ConnectionError, DataError)):
                step()

    both()
    assert calls == {"io": 3, "data": 1}
