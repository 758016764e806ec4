"""The generator networks, the shared critic, the GAN losses, the generator config and the kinds registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from ausynth.configs.generator import GeneratorConfig
from ausynth.models import gan_losses as L
from ausynth.models.expression_manipulator import ExpressionManipulator
from ausynth.models.patch_discriminator import PatchDiscriminator
from ausynth.models.stargan import StarGANGenerator
from ausynth.tasks.errors import CheckpointError, ConfigError
from ausynth.tasks.generator_kinds import GENERATOR_KINDS, Architecture, generator_kind
from ausynth.tasks.imageset import ImageSet

GENERATORS = {"em": ExpressionManipulator, "stargan": StarGANGenerator}


@pytest.mark.parametrize("kind", ["em", "stargan"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 48, 64])
def test_generator_and_critic_shapes(kind: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, channels, size, size) * 2 - 1
    out = GENERATORS[kind](channels, 5, 4, 1)(x, torch.rand(2, 5))
    assert out.shape == x.shape
    assert out.abs().max() <= 1  # tanh: the range of scaled uint8 images
    scores, labels = PatchDiscriminator(channels, (size, size), 5, 4)(x)
    assert scores.shape == (2, 1, size // 16, size // 16)
    assert labels.shape == (2, 5)


def test_non_square_image() -> None:
    x = torch.zeros(1, 1, 32, 48)
    assert ExpressionManipulator(1, 3, 4, 0)(x, torch.zeros(1, 3)).shape == x.shape
    assert PatchDiscriminator(1, (32, 48), 3, 4)(x)[0].shape == (1, 1, 2, 3)


@pytest.mark.parametrize("kind", ["em", "stargan"])
def test_size_not_multiple_of_16_is_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match="40x40 is not a positive multiple of 16"):
        GENERATORS[kind](1, 3, 4, 0)(torch.zeros(1, 1, 40, 40), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="multiple of 16"):
        PatchDiscriminator(1, (40, 40), 3, 4)


@pytest.mark.parametrize("norm, expected", [(1.0, 0.0), (2.0, 1.0), (0.5, 0.25)])
def test_gradient_penalty_of_a_linear_critic(norm: float, expected: float) -> None:
    """A linear critic has gradient w everywhere, so the penalty is (||w|| - 1)^2 exactly."""
    weight = torch.randn(1, 4, 4)
    weight *= norm / weight.norm()
    critic = lambda x: (x * weight).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    penalty = L.gradient_penalty(critic, real, fake, torch.rand(3, 1, 1, 1))
    assert penalty.item() == pytest.approx(expected, abs=1e-5)


def test_gradient_penalty_trains_the_critic() -> None:
    critic = PatchDiscriminator(1, (32, 32), 2, 4)
    real, fake = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    penalty = L.gradient_penalty(lambda x: critic(x)[0], real, fake, torch.full((2, 1, 1, 1), 0.5))
    penalty.backward()  # the penalty needs a second-order graph through the critic
    assert all(p.grad is not None for p in critic.features.parameters())


def test_losses_on_known_values() -> None:
    assert L.critic_loss(torch.tensor([2.0, 4.0]), torch.tensor([1.0])).item() == -2.0
    assert L.generator_adversarial_loss(torch.tensor([1.0, 3.0])).item() == -2.0
    assert L.l1_loss(torch.tensor([1.0, -1.0]), torch.zeros(2)).item() == 1.0
    assert L.au_regression_loss(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.zeros(2, 2)).item() == 1.5
    zero_logits = torch.zeros(2, 3)
    assert L.multilabel_loss(zero_logits, torch.ones(2, 3)).item() == pytest.approx(3 * torch.log(torch.tensor(2.0)))
    one_hot = torch.tensor([[0.0, 1.0, 0.0]])
    assert L.category_loss(torch.tensor([[0.0, 10.0, 0.0]]), one_hot).item() < 1e-3


def test_config_defaults_and_rejections(tmp_path) -> None:
    cfg = GeneratorConfig()
    assert (cfg.kind, cfg.betas, cfg.lambda_gp, cfg.lambda_cls, cfg.lambda_cycle, cfg.lambda_identity) == (
        "em", (0.5, 0.999), 10, 1, 10, 10)
    with pytest.raises(ValidationError, match="never be updated"):
        GeneratorConfig(steps=2, n_critic=5)
    with pytest.raises(ValidationError, match="is not a file"):
        GeneratorConfig(checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValidationError, match="intensity"):
        GeneratorConfig(intensity=1.5)
    with pytest.raises(ValidationError, match="extra"):
        GeneratorConfig(lamda_gp=1)
    with pytest.raises(ValidationError, match="extra"):
        GeneratorConfig(lambda_rec=10)  # renamed: lambda_cycle and lambda_identity
    with pytest.raises(ValidationError, match="unknown generator kind 'gan'"):
        GeneratorConfig(kind="gan")


# ----------------------------------------------------------------------------- the generator kinds


def _au_set(columns: list[str], size: int = 32, meta: dict | None = None) -> ImageSet:
    frame = pd.DataFrame(np.zeros((2, len(columns)), np.float32), columns=columns)
    frame.insert(0, "subject", "s")
    return ImageSet(np.zeros((2, size, size, 1), np.uint8), frame, columns, meta or {})


def test_registry_builds_each_kinds_networks_from_the_architecture() -> None:
    assert set(GENERATOR_KINDS) == {"em", "stargan", "cgan"}
    with pytest.raises(ConfigError, match="unknown generator.kind 'gan'"):
        generator_kind("gan")
    data = _au_set(["AU1", "AU2", "AU3"], size=48)
    for name, network in GENERATORS.items():
        arch = Architecture.of(GeneratorConfig(kind=name, base_channels=4, n_res_blocks=1), data)
        assert arch == Architecture(name, "au_presence", 4, 1, (48, 48, 1), ("AU1", "AU2", "AU3"))
        assert Architecture.from_dict(arch.as_dict()) == arch  # what a checkpoint stores reads back equal
        kind = generator_kind(name)
        generator, critic = kind.generator(arch), kind.discriminator(arch)
        assert isinstance(generator, network)
        x = torch.zeros(1, 1, 48, 48)
        assert generator(x, torch.zeros(1, 3)).shape == x.shape
        assert critic(x)[1].shape == (1, 3)


def test_objectives_follow_the_configured_weights_and_label_types() -> None:
    cfg = GeneratorConfig(lambda_cycle=3.0, lambda_identity=2.0)
    em = generator_kind("em").objective(cfg, "au_presence")
    assert (em.relative, em.targets, em.cycle_weight, em.identity_weight) == (True, "graded", 3.0, 2.0)
    source, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert torch.equal(em.condition(source, target), torch.tensor([[-1.0, 1.0]]))  # relative AUs
    assert torch.equal(em.single_targets(2, 0.7, torch.device("cpu")), torch.eye(2) * 0.7)
    star = generator_kind("stargan").objective(cfg, "au_intensity")
    assert (star.relative, star.targets, star.cycle_weight, star.identity_weight) == (False, "binary", 3.0, 0.0)
    assert torch.equal(star.condition(source, target), target)
    assert torch.equal(star.labels(torch.tensor([[0.2, 0.6]])), torch.tensor([[0.0, 1.0]]))
    assert torch.equal(star.single_targets(2, 0.7, torch.device("cpu")), torch.eye(2))  # presence, not 0.7
    assert generator_kind("stargan").objective(cfg, "emotion").targets == "category"


def test_a_kind_refuses_labels_it_cannot_condition_on() -> None:
    emotions = _au_set(["emotion_happy", "emotion_neutral"])
    assert Architecture.of(GeneratorConfig(kind="stargan"), emotions).label_type == "emotion"
    with pytest.raises(ConfigError, match="'em' cannot condition on 'emotion' labels.*use kind 'stargan'"):
        Architecture.of(GeneratorConfig(kind="em"), emotions)
    with pytest.raises(ConfigError, match="cannot condition on 'valence_arousal'"):
        Architecture.of(GeneratorConfig(kind="stargan"), _au_set(["valence", "arousal"]))


def test_architecture_require_names_what_differs_and_both_sides() -> None:
    expected = Architecture("em", "au_presence", 4, 1, (96, 96, 1), ("AU1", "AU2"))
    expected.require(Architecture.from_dict(expected.as_dict()), "same.pt")  # equal: no error
    found = Architecture("em", "au_presence", 8, 1, (64, 64, 1), ("AU1", "AU2"))
    with pytest.raises(CheckpointError) as error:
        expected.require(found, "x/other.pt")
    message = str(error.value)
    assert "x/other.pt" in message and "differs in base_channels, image_shape" in message
    assert "expected: em (base_channels 4" in message and "96x96x1 images" in message
    assert "found:    em (base_channels 8" in message and "64x64x1 images" in message


def test_edit_regions_confine_an_em_edit_to_the_regions_of_the_aus_asked_to_change() -> None:
    torch.manual_seed(0)
    toy = _au_set([f"AU{k}" for k in range(1, 10)], size=96, meta={"dataset": "toy"})
    arch = Architecture.of(GeneratorConfig(edit_regions=True, base_channels=4, n_res_blocks=0), toy)
    assert dict(arch.options) == {"edit_regions": "toy"} and Architecture.from_dict(arch.as_dict()) == arch
    model = generator_kind("em").generator(arch)
    assert "regions" not in model.state_dict()  # rebuilt from the architecture, so checkpoints stay as they were
    x = torch.rand(2, 1, 96, 96) * 2 - 1
    assert torch.equal(model(x, torch.zeros(2, 9)), x)  # no change asked: the input, exactly
    change = torch.zeros(2, 9)
    change[0, 1], change[1, 4] = 1.0, 0.25  # AU2 fully (cell 0,1); AU5 a quarter (the centre cell), half open
    out = model(x, change)
    moved = (out - x).abs()[:, 0] > 0
    assert moved[0, :32, 32:64].any() and not moved[0, :, :32].any() and not moved[0, 32:].any()
    assert moved[1, 32:64, 32:64].any() and moved[1].sum() == moved[1, 32:64, 32:64].sum()
    full = ExpressionManipulator(1, 9, 4, 0)  # the same weights without regions: its change, halved in AU5's cell
    full.load_state_dict(model.state_dict())
    assert torch.allclose((out - x)[1, :, 32:64, 32:64], 0.5 * (full(x, change) - x)[1, :, 32:64, 32:64], atol=1e-5)


def test_edit_regions_on_faces_are_soft_and_refused_where_they_cannot_apply() -> None:
    faces = _au_set(["AU1", "AU12", "AU99"], size=48, meta={"dataset": "faces"})
    regions = generator_kind("em").generator(Architecture.of(GeneratorConfig(edit_regions=True), faces)).regions
    assert regions.shape == (3, 48, 48) and regions.min() >= 0 and regions.max() <= 1
    assert regions[0, 8, 24] > 0.9 and regions[0, 44, 24] < 0.01  # AU1 (brows): top of the face, not the chin
    assert regions[1, 36, 24] > 0.9 and regions[1, 5, 24] < 0.01  # AU12 (lip corners): the mouth
    assert torch.equal(regions[2], torch.ones(48, 48))  # no region in the map: the whole face may change
    with pytest.raises(ConfigError, match="edit_regions needs a generator conditioned on the change.*'stargan'"):
        Architecture.of(GeneratorConfig(kind="stargan", edit_regions=True), faces)
    with pytest.raises(ConfigError, match="region map .*from None: set generator.edit_regions to false"):
        Architecture.of(GeneratorConfig(edit_regions=True), _au_set(["AU1"]))
