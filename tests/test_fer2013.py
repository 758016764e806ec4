"""configs/fer2013-stargan.yaml: the source project's StarGAN settings, and a tiny run of it through the
comparison on the real FER2013 crops (skipped where ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ausynth.configs.loader import load_config
from ausynth.flows.compare import compare_strategies
from ausynth.tasks import imageset

from conftest import shared_data

EMOTIONS = ["anger", "happiness", "neutral", "sadness"]


def test_the_config_holds_the_source_projects_settings():
    cfg = load_config("fer2013-stargan")
    data, gan = cfg.dataset, cfg.generator
    assert data.source.manifest == Path("../shared/data/fer2013-privatetest/labels.csv")
    assert (data.label_type, data.emotions) == ("emotion", EMOTIONS)  # 4 of 7, neutral for the sources
    assert (data.detection.backend, data.detection.size, data.detection.channels) == ("none", 48, 1)
    assert data.split.allow_missing_subject  # no identity column: one image, one subject
    assert (gan.kind, gan.lr, gan.betas, gan.batch_size) == ("stargan", 1e-4, (0.5, 0.999), 8)
    assert (gan.lambda_cls, gan.lambda_cycle) == (1.0, 10.0)
    assert "generator" in cfg.strategies


@pytest.mark.slow
def test_a_tiny_run_adds_emotion_isolated_images_and_reports_accuracy_and_macro_f1(tmp_path):
    manifest = shared_data("fer2013-privatetest") / "labels.csv"
    workspace = tmp_path / "ws"
    overrides = [f"dataset.source.manifest={manifest}", f"workspace={workspace}", "dataset.split.draws=2",
                 "classifier.max_epochs=1", "classifier.width=4", "classifier.batch_size=64", "augment.size=40",
                 "generator.steps=2", "generator.base_channels=4", "generator.n_res_blocks=1", "generator.log_every=1",
                 "generator.sample_every=2", "generator.checkpoint_every=2"]
    result = compare_strategies("fer2013-stargan", strategies=["supervised", "generator"], seeds=[0],
                                overrides=overrides)
    assert result.label_type == "emotion"
    assert list(result.table.index) == ["supervised", "generator"]
    scores = result.table[["accuracy", "f1_macro"]]
    assert ((scores >= 0) & (scores <= 1)).all().all()
    per_seed = pd.read_csv(f"{result.output_dir}/per_seed.csv", index_col=0).set_index("strategy")
    assert per_seed.loc["generator", "n_train"] - per_seed.loc["supervised", "n_train"] == 40
    generated = imageset.load(next((workspace / "store" / "generated").glob("*/images")))
    assert generated.image_shape == (48, 48, 1) and len(generated) == 40
    assert (generated.labels.sum(axis=1) == 1).all()  # each image asks for one emotion alone
    assert (generated.labels.sum(axis=0) == 10).all()  # the same number of each of the four
    parent = MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.metrics["generator/f1_macro"] == pytest.approx(result.table.loc["generator", "f1_macro"])
    assert np.isfinite(parent.data.metrics["supervised/accuracy"])
