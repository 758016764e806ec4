"""The semi_supervised_gan strategy: its networks, losses, training, store entry and a tiny comparison.

Unit tests use 16x16 images of two bright squares (one per label) so that a training takes a second;
the end-to-end test runs the comparison flow on the toy set at the suite's tiny sizes.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from ausynth.configs.loader import load_config
from ausynth.configs.schema import ClassifierConfig
from ausynth.configs.semi_supervised_gan import SemiSupervisedGANConfig
from ausynth.flows.compare import compare_strategies
from ausynth.models.au_classifier import AUClassifier
from ausynth.models.ssgan import NoiseGenerator, SemiSupervisedDiscriminator
from ausynth.tasks import classifiers, datasets, metrics
from ausynth.tasks.errors import ConfigError
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.label_types import label_type
from ausynth.tasks.ssgan_training import (SemiSupervisedGAN, adversarial_losses, generator_loss,
                                          train_semi_supervised_gan)
from ausynth.tasks.train_classifier import predict_proba
from ausynth.tasks.strategies import BASELINE, Inputs, strategy

from conftest import TINY

CPU = torch.device("cpu")
QUICK = ClassifierConfig(width=4, batch_size=16, max_epochs=3, min_epochs=1, patience=3)
GAN = SemiSupervisedGANConfig(noise_dim=8, base_channels=2)


def squares(n: int, seed: int, kind: str = "au_presence", unlabelled: bool = False) -> ImageSet:
    """Label k shows as a bright 6x6 square in place k of a dark 16x16 image; valence/arousal labels are the
    squares' brightness mapped to [-1, 1]."""
    rng = np.random.default_rng(seed)
    level = rng.random((n, 2)).astype(np.float32)
    images = rng.integers(0, 40, size=(n, 16, 16, 1), dtype=np.uint8)
    images[:, 2:8, 2:8, 0] = np.maximum(images[:, 2:8, 2:8, 0], (level[:, 0, None, None] > 0.5) * 255)
    images[:, 9:15, 9:15, 0] = np.maximum(images[:, 9:15, 9:15, 0], (level[:, 1, None, None] > 0.5) * 255)
    columns = ["AU1", "AU2"] if kind == "au_presence" else ["valence", "arousal"]
    labels = (level > 0.5).astype(np.float32) if kind == "au_presence" else (level > 0.5) * 1.6 - 0.8
    frame = pd.DataFrame(np.full((n, 2), np.nan) if unlabelled else labels, columns=columns)
    frame.insert(0, "subject", [f"s{seed}-{i}" for i in range(n)])
    return ImageSet(images, frame, columns, {"label_type": kind})


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet, ImageSet]:
    return squares(48, 0), squares(32, 1), squares(40, 2, unlabelled=True)


# ----------------------------------------------------------------------------- networks

@pytest.mark.parametrize("shape", [(96, 96, 1), (48, 48, 1), (32, 32, 3)])
def test_networks_shapes(shape):
    h, w, c = shape
    discriminator = SemiSupervisedDiscriminator(9, c, "small_cnn", 4, "au_presence")
    source, labels = discriminator(torch.zeros(5, c, h, w))
    assert source.shape == (5,) and labels.shape == (5, 9)
    assert isinstance(discriminator.classifier, AUClassifier)  # what the comparison stores and tests
    fake = NoiseGenerator(16, shape, 2)(torch.randn(5, 16))
    assert fake.shape == (5, c, h, w) and fake.abs().max() <= 1


def test_generator_refuses_sides_that_do_not_halve_three_times():
    with pytest.raises(ValueError, match="20x20 is not a multiple of 8"):
        NoiseGenerator(16, (20, 20, 1), 2)


# ----------------------------------------------------------------------------- losses

def test_adversarial_losses_smooth_the_real_side_only_and_ignore_labelled_rows():
    labelled, unlabelled, fake = torch.tensor([5.0, -5.0]), torch.tensor([0.3, 2.0, -1.0]), torch.tensor([0.5, -2.0])
    real_loss, fake_loss = adversarial_losses(torch.cat([labelled, unlabelled, fake]), 2, 3, 0.9)
    assert real_loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(unlabelled, torch.full((3,), 0.9)).item())
    assert fake_loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(fake, torch.zeros(2)).item())
    other = adversarial_losses(torch.cat([torch.tensor([-9.0, 9.0]), unlabelled, fake]), 2, 3, 0.9)
    assert (other[0].item(), other[1].item()) == (real_loss.item(), fake_loss.item())
    # one-sided: the real loss is lowest where the discriminator says 0.9, not 1; fakes are pushed to 0
    logits = torch.linspace(-6, 6, 1201)
    losses = [adversarial_losses(torch.stack([z, z]), 0, 1, 0.9)[0].item() for z in logits]
    assert torch.sigmoid(logits[int(np.argmin(losses))]).item() == pytest.approx(0.9, abs=1e-2)


def test_generator_loss_is_non_saturating():
    fooled, caught = generator_loss(torch.tensor([4.0])), generator_loss(torch.tensor([-4.0]))
    assert fooled.item() == pytest.approx(np.log1p(np.exp(-4.0)), rel=1e-5)  # -log sigmoid(4)
    assert caught.item() > fooled.item()
    z = torch.tensor([-4.0], requires_grad=True)
    generator_loss(z).backward()
    assert abs(z.grad.item()) > 0.9  # a fake the discriminator catches still gets a strong gradient


def test_a_step_trains_the_label_head_on_labelled_rows_and_the_source_head_on_the_rest(data):
    train, _, pool = data
    gan = SemiSupervisedGAN(train, pool, QUICK, GAN, seed=0, device=CPU)
    x = torch.zeros(4, 1, 16, 16)
    noise = torch.randn(4, GAN.noise_dim)
    no_labels = torch.full((4, 2), float("nan"))  # nothing to learn from: the label head must not move
    head, source, generator = (gan.D.classifier.head.weight.clone(), gan.D.source.weight.clone(),
                               [p.clone() for p in gan.G.parameters()])
    losses = gan.step(x, no_labels, x, noise)
    assert set(losses) == {"train_loss", "train_d_real", "train_d_fake", "train_g_loss"}
    assert losses["train_loss"] == 0.0
    torch.testing.assert_close(gan.D.classifier.head.weight, head)
    assert not torch.equal(gan.D.source.weight, source)
    assert any(not torch.equal(p, q) for p, q in zip(gan.G.parameters(), generator))
    assert all(p.requires_grad for p in gan.D.parameters())  # frozen only during the generator's update
    gan.step(x, torch.ones(4, 2), x, noise)
    assert not torch.equal(gan.D.classifier.head.weight, head)


def test_input_noise_reaches_everything_the_discriminator_sees(data, monkeypatch):
    train, _, pool = data
    gan = SemiSupervisedGAN(train, pool, QUICK.model_copy(update={"input_noise": 0.5}), GAN, seed=0, device=CPU)
    seen = []
    forward = type(gan.D).forward
    monkeypatch.setattr(type(gan.D), "forward", lambda self, x: seen.append(x.detach().clone()) or forward(self, x))
    x = torch.zeros(4, 1, 16, 16)
    gan.step(x, torch.ones(4, 2), x, torch.randn(4, GAN.noise_dim))
    assert len(seen) == 2
    for batch in seen:  # the real rows were all 0, the fakes a tanh's output: only noise takes them past 1
        assert 0.4 < batch[:8].std() < 0.6 and batch[8:].abs().max() > 1


def test_ccc_loss_is_one_minus_ccc_per_output_and_masks_unlabelled_rows():
    va = label_type("valence_arousal").loss("ccc")
    target = torch.tensor([[0.5, -0.2], [-0.3, 0.4], [0.1, float("nan")], [-0.3, -0.2]])  # labelled means 0
    exact = torch.atanh(torch.nan_to_num(target))
    assert va(exact, target).item() == pytest.approx(0.0, abs=1e-5)
    assert va(torch.zeros(4, 2), target).item() == pytest.approx(1.0)  # a constant: CCC 0
    assert va(-exact, target).item() == pytest.approx(2.0, abs=1e-5)  # mirrored about the mean: CCC -1
    logits = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    predicted = torch.tanh(logits).numpy()
    expected = 1 - np.mean([metrics.ccc(target[:, 0].numpy(), predicted[:, 0]),
                            metrics.ccc(target[[0, 1, 3], 1].numpy(), predicted[[0, 1, 3], 1])])
    assert va(logits, target).item() == pytest.approx(expected, abs=1e-5)
    logits.requires_grad_(True)
    va(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[2, 1] == 0  # the unlabelled entry teaches nothing
    assert label_type("valence_arousal").loss("mse")(exact, target).item() == pytest.approx(0.0, abs=1e-6)


def test_ccc_loss_is_for_regressions_only():
    assert label_type("au_intensity").loss("ccc")(torch.zeros(3, 1), torch.tensor([[0.0], [0.5], [1.0]])).item() == 1
    with pytest.raises(ConfigError, match="classifier.loss 'ccc'.*au_presence"):
        label_type("au_presence").loss("ccc")


# ----------------------------------------------------------------------------- training

def test_training_is_deterministic_for_a_seed_and_logs_its_series(data):
    train, val, pool = data
    runs = [train_semi_supervised_gan(train, val, pool, QUICK, GAN, seed, CPU) for seed in (3, 3, 4)]
    first, again, other = runs
    assert first.history == again.history
    for key, value in first.model.state_dict().items():
        torch.testing.assert_close(value, again.model.state_dict()[key])
    assert other.history != first.history
    assert isinstance(first.model, AUClassifier) and first.model.label_type == "au_presence"
    assert {"train_loss", "train_d_real", "train_d_fake", "train_g_loss", "val_loss", "val_f1"} <= set(first.history[0])
    assert len(first.history) == first.epochs == 3 and 1 <= first.best_epoch <= 3


def test_valence_arousal_heads_are_tanh_bounded_and_trained_with_ccc():
    train, val = squares(48, 0, "valence_arousal"), squares(32, 1, "valence_arousal")
    pool = squares(40, 2, "valence_arousal", unlabelled=True)
    trained = train_semi_supervised_gan(train, val, pool, QUICK.model_copy(update={"loss": "ccc"}), GAN, 0, CPU)
    assert trained.model.label_type == "valence_arousal" and trained.monitor == "val_ccc"
    assert {"val_ccc", "val_rmse"} <= set(trained.history[0])
    scores = predict_proba(trained.model, val.images, CPU)  # tanh of the head
    assert scores.shape == (32, 2) and np.abs(scores).max() <= 1


def test_an_empty_pool_is_refused(data):
    train, val, pool = data
    with pytest.raises(ValueError, match="needs unlabelled images"):
        train_semi_supervised_gan(train, val, pool.subset(np.arange(0)), QUICK, GAN, 0, CPU)


# ----------------------------------------------------------------------------- the strategy and its store entry

def _config(tmp_path, *overrides):
    return load_config("toy-quick", [*TINY, f"workspace={tmp_path / 'ws'}", "semi_supervised_gan.base_channels=2",
                                     *overrides])


def test_the_strategy_stores_its_discriminator_as_the_classifier_the_comparison_tests(tmp_path):
    cfg = _config(tmp_path)
    dataset = datasets.prepare_dataset(cfg)
    ssgan = strategy("semi_supervised_gan")
    model = classifiers.fit_classifier(cfg, ssgan, 0, Inputs(dataset))
    info = json.loads((model.path / "info.json").read_text())
    n_train = len(datasets.train_val(datasets.load_set(dataset, "labelled"))[0])
    assert (info["strategy"], info["n_added"], info["n_train"]) == ("semi_supervised_gan", 100, n_train + 100)
    assert classifiers.fit_classifier(cfg, ssgan, 0, Inputs(dataset)) == model  # stored once, reused
    result = classifiers.evaluate(cfg, dataset, model)
    assert result.strategy == "semi_supervised_gan" and {"f1_mean", "fdr_mean"} <= set(result.metrics)
    assert "train_d_real" in result.history[0]
    changed = _config(tmp_path, "semi_supervised_gan.label_smoothing=0.8")
    assert classifiers.classifier_key(changed, ssgan, 0, Inputs(dataset)) != model.key
    assert classifiers.classifier_key(changed, BASELINE, 0, Inputs(dataset)) == classifiers.classifier_key(
        cfg, BASELINE, 0, Inputs(dataset))  # the GAN's settings key only its own strategy


def test_config_refuses_a_pool_smaller_than_augment_size_and_bad_smoothing(tmp_path):
    with pytest.raises(ConfigError, match=r"augment.size \(300\) exceeds dataset.unlabelled \(200\).*semi_supervised_gan"):
        _config(tmp_path, "strategies=[supervised, semi_supervised_gan]", "augment.size=300")
    with pytest.raises(ConfigError, match="semi_supervised_gan.label_smoothing"):
        _config(tmp_path, "semi_supervised_gan.label_smoothing=1.5")


@pytest.mark.slow
def test_a_tiny_comparison_reports_and_logs_the_discriminator_like_any_classifier(tmp_path):
    overrides = [*TINY, "seeds=[0, 1]", f"workspace={tmp_path / 'ws'}", "semi_supervised_gan.base_channels=2"]
    result = compare_strategies("toy-quick", strategies=["supervised", "semi_supervised_gan"], overrides=overrides)
    assert list(result.table.index) == ["supervised", "semi_supervised_gan"]
    assert (result.table["seeds"] == 2).all()
    assert result.table.loc["semi_supervised_gan", ["f1_mean", "fdr_mean"]].notna().all()
    assert (result.differences["a"] == "semi_supervised_gan").any()
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["semi_supervised_gan/f1_mean"] == pytest.approx(
        result.table.loc["semi_supervised_gan", "f1_mean"])
    experiment = parent.info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{result.parent_run_id}' and "
                                                 "params.strategy = 'semi_supervised_gan'")
    assert sorted(run.data.params["seed"] for run in children) == ["0", "1"]
    child = children[0]
    assert {"train/loss", "val/f1", "train/d_real", "train/g_loss"} <= set(child.data.metrics)
    assert len(client.get_metric_history(child.info.run_id, "train/loss")) == 2  # one point per epoch
    assert child.data.params["n_added"] == "100"
