"""End to end: the comparison flow on a tiny toy config, MLflow contents, store reuse, store damage."""

import json
import logging
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ausynth.flows.compare import compare_strategies
from ausynth.tasks.store import damage

from conftest import REPO, TINY

pytestmark = pytest.mark.slow

STRATEGIES = ["supervised", "upsample", "pseudo_label", "generator"]


def store_entries(workspace):
    return {p.relative_to(workspace): p.stat().st_mtime_ns for p in (workspace / "store").glob("*/*")}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One full comparison (every strategy, two seeds), shared by the tests of this module."""
    workspace = tmp_path_factory.mktemp("flow") / "ws"
    overrides = [*TINY, "seeds=[0, 1]", f"workspace={workspace}"]
    return compare_strategies("toy-quick", overrides=overrides), overrides, workspace


@pytest.fixture(scope="module")
def client(first):
    return MlflowClient(first[0].tracking_uri)


def children_of(client, parent_id):
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")


def test_the_table_has_every_strategy_with_its_spread(first):
    result = first[0]
    assert list(result.table.index) == STRATEGIES
    assert (result.table["seeds"] == 2).all() and (result.table["never_learnt"] >= 0).all()
    assert {"f1_mean", "f1_mean_sd", "fdr_mean", "fdr_mean_sd"} <= set(result.table.columns)
    assert result.table[["f1_mean", "fdr_mean"]].notna().all().all()
    per_seed = pd.read_csv(f"{result.output_dir}/per_seed.csv", index_col=0)
    assert len(per_seed) == 8
    means = per_seed.groupby("strategy")["f1_mean"].agg(["mean", "std"])
    for strategy in STRATEGIES:  # the table's mean and sd are those of the per-seed rows
        assert result.table.loc[strategy, "f1_mean"] == pytest.approx(means.loc[strategy, "mean"])
        assert result.table.loc[strategy, "f1_mean_sd"] == pytest.approx(means.loc[strategy, "std"])
    saved = pd.read_csv(f"{result.output_dir}/comparison.csv", index_col=0)
    assert list(saved.index) == STRATEGIES
    pd.testing.assert_series_equal(saved["f1_mean"], result.table["f1_mean"], check_names=False)


def test_the_flow_runs_are_named_for_what_ran(first):
    """The CLI passes only the config and overrides: the name comes from the config as read."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        names = {(run.name, run.parent_task_run_id is None) for run in prefect.read_flow_runs()}
    ran = f"toy-quick: {', '.join(STRATEGIES)} x seeds 0, 1"
    assert {(ran, True), (ran, False)} <= names  # the flow a user started, and its DAG subflow


def test_the_parent_run_holds_config_versions_comparison_and_generator(first, client):
    result = first[0]
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["seeds"] == "0,1" and parent.data.params["classifier.max_epochs"] == "2"
    assert parent.data.params["version.torch"].startswith("2.")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert parent.data.tags["mlflow.source.git.commit"] == (head or "unknown")
    assert parent.data.tags["output_dir"] == result.output_dir
    for strategy in STRATEGIES:
        assert parent.data.metrics[f"{strategy}/f1_mean"] == pytest.approx(result.table.loc[strategy, "f1_mean"])
        assert parent.data.metrics[f"{strategy}/f1_mean_sd"] == pytest.approx(
            result.table.loc[strategy, "f1_mean_sd"])
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"comparison.csv", "comparison.json", "per_seed.csv", "per_output_f1.png", "confusion.png",
            "config.yaml", "generated", "dataset", "gan"} <= artifacts
    generated = {a.path for a in client.list_artifacts(result.parent_run_id, "generated")}
    assert {"generated/quality.csv", "generated/examples.png", "generated/summary.json"} <= generated
    assert client.list_artifacts(result.parent_run_id, "gan/samples")
    assert 0 <= parent.data.metrics["generated/pass_rate"] <= 1
    checkpoint = parent.data.tags["generator_checkpoint"]
    assert checkpoint.startswith(str(first[2] / "store" / "generators")) and checkpoint.endswith("/generator.pt")
    assert [m.step for m in client.get_metric_history(result.parent_run_id, "gan/d_loss")] == [2, 4]


def test_one_child_run_per_strategy_and_seed_with_its_metrics_and_model(first, client):
    result = first[0]
    children = children_of(client, result.parent_run_id)
    assert sorted((r.data.tags["strategy"], r.data.tags["seed"]) for r in children) == sorted(
        (s, str(seed)) for s in STRATEGIES for seed in (0, 1))
    for child in children:
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert child.info.status == "FINISHED" and tags["ausynth.complete"] == "true"
        assert tags["run_key"] == f"{tags['strategy']}/seed{tags['seed']}"
        # FDR of an AU the classifier never predicted is undefined, so not logged (tasks/metrics.py)
        assert {"test/f1_mean", "test/fdr_mean", "test/f1/AU3", "test/recall/AU3"} <= set(metrics)
        assert any(name.startswith("test/fdr/AU") for name in metrics)
        assert params["n_added"] == ("0" if tags["strategy"] == "supervised" else "100")
        run_id = child.info.run_id
        epochs = int(metrics["train/epochs"])
        for name in ("train/loss", "val/loss", "val/f1"):
            assert [m.step for m in client.get_metric_history(run_id, name)] == list(range(1, epochs + 1)), name
        trained = json.loads((Path(tags["model_dir"]) / "info.json").read_text())["training_ms"]
        assert [child.info.start_time, child.info.end_time] == trained  # the run spans the training
        models = client.search_logged_models([child.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
        assert len(models) == 1 and tags["model_uri"] == f"models:/{models[0].model_id}"
    per_seed = pd.read_csv(f"{result.output_dir}/per_seed.csv")
    row = per_seed[(per_seed["strategy"] == "upsample") & (per_seed["seed"] == 1)].iloc[0]
    child = next(r for r in children if r.data.tags["run_key"] == "upsample/seed1")
    assert child.data.metrics["test/f1_mean"] == pytest.approx(row["f1_mean"])


def test_the_best_strategys_model_is_registered(first, client):
    result = first[0]
    name, version = client.get_run(result.parent_run_id).data.tags["registered_model"].split("/")
    source = client.get_run(client.get_model_version(name, version).run_id)
    assert source.data.tags["strategy"] == result.table["f1_mean"].idxmax()
    assert source.data.tags["mlflow.parentRunId"] == result.parent_run_id


def test_a_rerun_reuses_the_store_and_a_changed_setting_adds_entries(first):
    result, overrides, workspace = first
    before = store_entries(workspace)
    again = compare_strategies("toy-quick", overrides=overrides)
    assert store_entries(workspace) == before  # nothing rebuilt, nothing overwritten
    assert again.output_dir != result.output_dir and again.parent_run_id != result.parent_run_id
    pd.testing.assert_frame_equal(again.table, result.table)

    changed = compare_strategies("toy-quick", strategies=["supervised"], overrides=[*overrides, "classifier.lr=0.002"])
    after = store_entries(workspace)
    added = {str(path.parent) for path in set(after) - set(before)}
    assert added == {"store/classifiers"}  # two new classifiers (seeds 0 and 1), the same dataset
    assert len(set(after) - set(before)) == 2
    assert all(after[k] == v for k, v in before.items())  # the first run's results untouched
    assert list(changed.table.index) == ["supervised"]


@pytest.fixture
def ausynth_log():
    """The ausynth logger's records, whatever handlers Prefect installs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("ausynth")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_a_damaged_store_entry_is_set_aside_and_rebuilt_by_the_next_run(tmp_path, ausynth_log):
    overrides = [*TINY, "strategies=[supervised]", f"workspace={tmp_path / 'ws'}"]
    compare_strategies("toy-quick", overrides=overrides)
    store = tmp_path / "ws" / "store"
    (model,) = (store / "classifiers").iterdir()
    (dataset,) = (store / "datasets").iterdir()
    (model / "model.pt").unlink()
    images = dataset / "test" / "images.npy"
    images.write_bytes(images.read_bytes()[:1000])

    result = compare_strategies("toy-quick", overrides=overrides)
    assert MlflowClient(result.tracking_uri).get_run(result.parent_run_id).info.status == "FINISHED"
    assert list(result.table.index) == ["supervised"]
    warnings = "\n".join(r.getMessage() for r in ausynth_log)
    assert f"store entry {model} is damaged (model.pt is missing)" in warnings
    assert f"store entry {dataset} is damaged (test/images.npy has 1000 bytes where" in warnings
    for entry in (model, dataset):
        (aside,) = entry.parent.glob(f".{entry.name}.damaged-*")
        assert str(aside) in warnings
        assert damage(entry) is None  # rebuilt whole under the same key
    assert (model / "model.pt").is_file() and images.stat().st_size > 1000
