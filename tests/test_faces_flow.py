"""The whole DAG on real faces: JAFFE emotions with StarGAN on emotion domains, and CK+ AU presence with the
EM editing JAFFE's neutral faces; LFW is the unlabelled pool of both."""

import json
from pathlib import Path

import pandas as pd
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


def test_ckplus_au_comparison_runs_end_to_end_with_jaffe_neutral_sources(tmp_path):
    """faces-ckplus-paper (the GPU config) shrunk to the CPU: per-AU F1 and FDR per strategy with paired
    differences, and generated images judged per AU beside the real-image rate and the region change."""
    ckplus, lfw, jaffe = shared_data("ckplus-au-dev"), shared_data("lfw-pairs"), shared_data("jaffe")
    overrides = [
        f"workspace={tmp_path / 'ws'}", f"dataset.source.manifest={ckplus / 'labels.csv'}",
        f"dataset.unlabelled.manifest={lfw / 'identities.csv'}", "dataset.unlabelled.limit=20",
        f"dataset.neutral.manifest={jaffe / 'labels.csv'}", "dataset.neutral.limit=4", "dataset.split.draws=3",
        "seeds=[0,1]", "augment.size=48", "classifier.max_epochs=2", "classifier.width=4",
        "generator.steps=4", "generator.base_channels=4", "generator.batch_size=4", "generator.n_critic=2",
        "generator.log_every=2", "generator.sample_every=2", "generator.checkpoint_every=2",
        "generator.n_res_blocks=1", "generator.edit_regions=true",  # as faces-ckplus (the CPU config) has it
    ]
    result = compare_strategies("faces-ckplus-paper", overrides=overrides)

    assert list(result.table.index) == ["supervised", "generator"] and (result.table["seeds"] == 2).all()
    assert {"f1_mean", "fdr_mean", "f1_mean_sd"} <= set(result.table.columns)
    assert {"f1_mean", "fdr_mean"} <= set(result.differences["metric"])
    per_seed = pd.read_csv(Path(result.output_dir) / "per_seed.csv")
    assert {"f1_AU1", "fdr_AU1", "f1_AU12", "fdr_AU12"} <= set(per_seed.columns)  # per AU, per strategy and seed
    client = MlflowClient(result.tracking_uri)
    generated = Path(client.download_artifacts(result.parent_run_id, "generated", str(tmp_path / "artifacts")))
    quality = pd.read_csv(generated / "quality.csv", index_col=0)
    assert len(quality) == 24 and (quality["images"] == 2).all()  # 48 images, one AU each, 24 AUs
    assert {"pass_rate", "real_pass_rate", "real_images", "real_target_shown", "relative_target_shown",
            "change_inside", "change_outside"} <= set(quality.columns)
    assert (quality["change_inside"] > 2 * quality["change_outside"]).all()  # each edit stays in its AU's region
    summary = json.loads((generated / "summary.json").read_text())
    assert summary["images"] == 48 and 0 <= summary["sources_showing_a_label"] <= 1
    made = pd.read_parquet(next((tmp_path / "ws" / "store" / "generated").glob("*/images/manifest.parquet")))
    sources = pd.read_csv(generated / "sources.csv", index_col=0)  # the sources' predicted AU profile, per AU
    assert list(sources.index) == list(quality.index) and {"mean", "max"} <= set(sources.columns)
    assert (sources["sources"] == made["source_index"].nunique()).all()
    jaffe_subjects = set(pd.read_csv(jaffe / "labels.csv")["subject"])
    assert set(made["subject"]) <= jaffe_subjects  # edited from JAFFE's neutral faces, not from LFW
    assert made[quality.index].max(axis=1).eq(0.7).all()  # one AU each, at the faces' intensity
