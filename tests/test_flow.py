"""End to end: the comparison flow on a tiny toy config, MLflow contents, store reuse."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ausynth.flows.compare import compare_strategies

pytestmark = pytest.mark.slow


def store_entries(workspace):
    return {p.relative_to(workspace): p.stat().st_mtime_ns for p in (workspace / "store").glob("*/*")}


def test_comparison_flow_logs_everything_and_reuses_the_store(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "seeds=[0, 1]"]
    result = compare_strategies("toy-quick", overrides=overrides)
    workspace = tmp_path / "ws"

    strategies = ["supervised", "upsample", "pseudo_label", "generator"]
    assert list(result.table.index) == strategies
    assert (result.table["seeds"] == 2).all()
    assert result.table[["f1_mean_mean", "fdr_mean_mean"]].notna().all().all()

    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["seeds"] == "0,1" and "version.torch" in parent.data.params
    assert len(parent.data.tags["git_commit"]) in (40, len("unknown"))
    assert "supervised.f1_mean_mean" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"comparison.csv", "per_seed.csv", "per_au_f1.png", "au_confusion.png", "config.yaml", "generated",
            "dataset", "generator"} <= artifacts
    generated = {a.path for a in client.list_artifacts(result.parent_run_id, "generated")}
    assert {"generated/quality.csv", "generated/examples.png"} <= generated
    assert client.list_artifacts(result.parent_run_id, "generator/samples")
    assert 0 <= parent.data.metrics["generated.pass_rate"] <= 1
    assert parent.data.tags["generator_checkpoint"].endswith("generator.pt")
    assert len(client.get_metric_history(result.parent_run_id, "generator.d_loss")) >= 1
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted((r.data.tags["strategy"], r.data.tags["seed"]) for r in children) == sorted(
        (s, str(seed)) for s in strategies for seed in (0, 1))
    generator_child = next(r for r in children if r.data.tags["strategy"] == "generator")
    assert "generated" in generator_child.data.params["generated_from"]
    child = children[0]
    assert {"f1_mean", "fdr_mean", "f1_AU3", "fdr_AU3"} <= set(child.data.metrics)
    assert len(client.get_metric_history(child.info.run_id, "epoch_val_f1")) >= 1
    assert pd.read_csv(f"{result.output_dir}/comparison.csv", index_col=0).shape[0] == 4
    assert client.get_logged_model(child.outputs.model_outputs[0].model_id).name == "model"
    registered = parent.data.tags.get("registered_model") or client.get_run(result.parent_run_id).data.tags["registered_model"]
    name, version = registered.split("/")
    best = result.table["f1_mean_mean"].idxmax()
    assert client.get_run(client.get_model_version(name, version).run_id).data.tags["strategy"] == best

    before = store_entries(workspace)
    again = compare_strategies("toy-quick", overrides=overrides)
    assert store_entries(workspace) == before  # nothing rebuilt, nothing overwritten
    assert again.output_dir != result.output_dir and again.parent_run_id != result.parent_run_id
    pd.testing.assert_frame_equal(again.table, result.table)

    changed = compare_strategies("toy-quick", strategies=["supervised"], overrides=[*overrides, "classifier.lr=0.002"])
    after = store_entries(workspace)
    assert set(before) < set(after)  # new classifiers under new keys
    assert all(after[k] == v for k, v in before.items())  # the first run's results untouched
    assert list(changed.table.index) == ["supervised"]
