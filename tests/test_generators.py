"""The generator networks, the shared critic, the GAN losses and the generator config."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from ausynth.configs.generator import GeneratorConfig
from ausynth.models import gan_losses as L
from ausynth.models.expression_manipulator import ExpressionManipulator
from ausynth.models.patch_discriminator import PatchDiscriminator
from ausynth.models.stargan import StarGANGenerator

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
    assert (cfg.kind, cfg.betas, cfg.lambda_gp, cfg.lambda_cls, cfg.lambda_rec) == ("em", (0.5, 0.999), 10, 1, 10)
    with pytest.raises(ValidationError, match="never be updated"):
        GeneratorConfig(steps=2, n_critic=5)
    with pytest.raises(ValidationError, match="is not a file"):
        GeneratorConfig(checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValidationError, match="intensity"):
        GeneratorConfig(intensity=1.5)
    with pytest.raises(ValidationError, match="extra"):
        GeneratorConfig(lamda_gp=1)
