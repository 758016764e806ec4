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
    assert {"accuracy_mean", "f1_macro_mean"} <= set(result.table.columns)
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["dataset"] == "faces"
    dataset_files = {a.path for a in client.list_artifacts(result.parent_run_id, "dataset")}
    assert any(path.endswith("detection.csv") or "detection" in path for path in dataset_files)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"per_output.png", "confusion.png", "generated"} <= artifacts
    assert parent.data.metrics["generated.images"] == 20
