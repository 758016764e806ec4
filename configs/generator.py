"""The generator section: which conditional GAN, how big, how it is trained and used.

The defaults are sized for a 2-core CPU and the 96x96 toy set: base_channels 8 and 300 steps
train the EM in about three minutes, after which 99% of its AU-isolated toy images pass the
oracle check. The papers' lr of 1e-4 is meant for tens of thousands of steps on a GPU (at 300
steps it yields 0% passing images), hence the default of 5e-4; a GPU run raises
``base_channels`` and ``steps`` and may return to 1e-4. Loss weights default to the papers'
values (StarGAN: lambda_cls 1, lambda_rec 10 (here ``lambda_cycle``), lambda_gp 10). Each weight is
named for the loss it weighs, the same for every kind that has that loss.

``cgan`` draws images from noise and a label instead of editing a source image; its own section
(``generator.cgan``) shapes its networks, and its adversarial loss is usually ``bce`` or ``hinge``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from ausynth.configs.section import Section

Weight = Annotated[float, Field(ge=0)]


class CGANConfig(Section):
    """The conditional DCGAN's shape (kind ``cgan`` only; models/cgan.py)."""

    noise_dim: PositiveInt = 64
    upsampling: Literal["nearest", "transposed"] = "nearest"  # nearest-neighbour + 3x3 conv avoids checkerboards
    activation: Literal["leaky_relu", "relu"] = "leaky_relu"  # the generator's; the discriminator's is leaky
    conditioning: Literal["projection", "concat"] = "projection"  # how the discriminator reads the label


class GeneratorConfig(Section):
    """Train (or load) an Expression Manipulator, StarGAN or conditional GAN and make AU-isolated images with it."""

    # What the labels are comes from the data (its meta["label_type"]): AU presence or intensity
    # suit every kind; emotion categories StarGAN and cgan (a relative change between categories
    # means nothing to the EM); valence/arousal only cgan.
    kind: str = "em"  # a name in tasks/generator_kinds.GENERATOR_KINDS
    # How training draws target labels: 'shuffle' takes another image's label vector (the papers);
    # 'per_au' permutes each label column on its own, which keeps every AU's frequency but breaks
    # the AU correlations of the data, so single-AU targets are not rare during training.
    target_sampling: Literal["shuffle", "per_au"] = "per_au"
    # How training draws real images: 'uniform', or 'decorrelated': each image weighted by how rare
    # its presence pattern over the strongly co-occurring AUs is (pairs with phi >= 0.5 in the
    # training labels), so that every pattern (e.g. AU2 without AU3) is drawn equally often and the
    # critic learns each AU of a pair apart from the other.
    real_sampling: Literal["uniform", "decorrelated"] = "uniform"

    # EM only: confine each AU's edit to where that AU lives (its toy cell, or its FACS face region;
    # models/expression_manipulator.py), so an edit cannot repaint the rest of the image.
    edit_regions: bool = False

    base_channels: PositiveInt = 8
    n_res_blocks: Annotated[int, Field(ge=0)] = 2

    steps: PositiveInt = 300
    batch_size: PositiveInt = 16
    lr: Annotated[float, Field(gt=0)] = 5e-4
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.5, 0.999)
    decay_from: Annotated[float, Field(ge=0, le=1)] = 0.5  # fraction of steps after which lr falls linearly to 0
    n_critic: PositiveInt = 1  # discriminator updates per generator update

    # wgan_gp (the EM's and StarGAN's), bce (the original GAN, non-saturating) or hinge
    adversarial_loss: Literal["wgan_gp", "bce", "hinge"] = "wgan_gp"
    lambda_gp: Weight = 10.0  # the critic's gradient penalty (wgan_gp only)
    lambda_cls: Weight = 1.0  # conditional fulfilment: StarGAN classification, EM AU regression
    lambda_cycle: Weight = 10.0  # cycle reconstruction G(G(x, c'), c) = x (StarGAN's lambda_rec)
    lambda_identity: Weight = 10.0  # EM only: G(x, no change) = x

    log_every: PositiveInt = 25
    sample_every: PositiveInt = 100
    checkpoint_every: PositiveInt = 100
    # mixed precision, in training and in generation: float16 on CUDA, bfloat16 on a CPU with native bf16
    # (tasks/device.py), else float32
    amp: bool = True

    intensity: Annotated[float, Field(gt=0, le=1)] = 1.0  # 1.0 toy, 0.7 faces
    # Neutral sources: labelled images with every AU 0, pool images whose every predicted AU is below
    # neutral_threshold, or both; or the dataset's labelled neutral set (dataset.neutral: neutral by its
    # label, no threshold). 'auto' takes the neutral set where the dataset has one, else both of the first
    # two. The most neutral (by label, else by the teacher's scores) are used first.
    neutral_source: Literal["auto", "labelled", "pool", "neutral_set"] = "auto"
    neutral_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    images_per_au: PositiveInt | None = None  # None: the comparison's augment.size split over the AUs
    # drop_failed: add only images the oracle passes, exactly augment.size of them: new sources are
    # tried for up to max_rounds rounds, then on_shortfall decides: fail; shift a short label's share to the
    # labels with passing images to spare (a weak generator that draws only some AUs); or fill with failing images.
    drop_failed: bool = False
    max_rounds: PositiveInt = 5
    on_shortfall: Literal["fail", "shift", "fill"] = "fail"
    checkpoint: Path | None = None  # a trained generator to use instead of training one
    cgan: CGANConfig = CGANConfig()

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from ausynth.tasks.generator_kinds import GENERATOR_KINDS  # the registry imports this module

        if value not in GENERATOR_KINDS:
            raise ValueError(f"unknown generator kind {value!r}: use one of {list(GENERATOR_KINDS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "GeneratorConfig":
        if self.steps < self.n_critic:
            raise ValueError(
                f"generator.steps ({self.steps}) is below generator.n_critic ({self.n_critic}): "
                "the generator would never be updated"
            )
        if self.adversarial_loss == "wgan_gp" and self.lambda_gp == 0:
            raise ValueError("generator.lambda_gp is 0 with generator.adversarial_loss 'wgan_gp': the critic's "
                             "scores are unbounded without the penalty; use bce or hinge, or a positive lambda_gp")
        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise ValueError(f"generator.checkpoint {str(self.checkpoint)!r} is not a file")
        return self
