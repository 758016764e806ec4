"""The whole DAG on real faces: JAFFE emotions, an LFW unlabelled pool, StarGAN on emotion domains."""

import pytest
from mlflow.tracking import MlflowClient

from ausynth.flows.compare import compare_strategies

from conftest import shared_data

pytestmark = pytest.mark.slow


def test_jaffe_comparison_runs_end_to_end(tmp_path):
    jaffe, lfw = shared_data("jaffe"), shared_data("lfw-pairs")
    overrides = [
        f"workspace={tmp_path / 'ws'}", f"dataset.source.manifest={jaffe / 'labels.csv'}",
        f"dataset.unlabelled.manifest={lfw / 'identities.csv'}", "dataset.unlabelled.limit=30",
        "dataset.detection.size=32", "dataset.split.draws=3", "seeds=[0]", "augment.size=20",
        "classifier.max_epochs=2", "classifier.width=4",
        "generator.steps=4", "generator.base_channels=4", "generator.batch_size=4", "generator.log_every=2",
        "generator.sample_every=2", "generator.checkpoint_every=2", "generator.n_res_blocks=1",
    ]
    result = compare_strategies("faces-jaffe", overrides=overrides)

    assert list(result.table.index) == ["supervised", "upsample", "pseudo_label", "generator"]
    assert {"accuracy", "accuracy_sd", "f1_macro", "f1_macro_sd"} <= set(result.table.columns)
    assert "f1_mean" not in result.table.columns  # emotion labels: the emotion metrics, not AU ones
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["dataset"] == "faces"
    dataset_files = {a.path for a in client.list_artifacts(result.parent_run_id, "dataset")}
    assert {"dataset/detection.csv", "dataset/detection_summary.csv", "dataset/class_counts.png"} <= dataset_files
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"per_output_f1.png", "confusion.png", "generated"} <= artifacts
    assert parent.data.metrics["generated/images"] == 20
    child = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}' "
                                                            "and tags.run_key = 'generator/seed0'")[0]
    assert child.data.params["label_type"] == "emotion" and "test/accuracy" in child.data.metrics
