"""Typed experiment configs: YAML in, validated pydantic objects out.

Every section forbids unknown keys, so a typo (``clasifier:``) fails before any work starts,
with pydantic's message naming the offending key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveInt, field_validator, model_validator

from ausynth.configs.execution import ExecutionConfig
from ausynth.configs.faces import FaceDatasetConfig
from ausynth.configs.generator import GeneratorConfig
from ausynth.configs.section import Section
from ausynth.configs.semi_supervised_gan import SemiSupervisedGANConfig

MAX_SEED = 2**32 - 1  # numpy's np.random.seed accepts 0..2**32-1; checked here, not at the first training


def _check_seed(value: int) -> int:
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed must be between 0 and {MAX_SEED} (2**32-1, numpy's limit)")
    return value


Seed = Annotated[int, AfterValidator(_check_seed)]


class ToyDatasetConfig(Section):
    """The digit-grid toy set of MISSION.md; sizes in images."""

    kind: Literal["toy"] = "toy"
    difficulty: Literal["clean", "medium", "hard"] = "medium"
    labelled: PositiveInt = 3000
    unlabelled: Annotated[int, Field(ge=0)] = 9000
    test_per_au: PositiveInt = 1000
    p_active: Annotated[float, Field(gt=0, lt=1)] = 0.2
    p_correlated: Annotated[float, Field(ge=0, le=1)] = 0.7
    digits: Literal["sklearn", "mnist"] = "sklearn"
    mnist_path: Path | None = None
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    seed: Seed = 0

    @model_validator(mode="after")
    def _mnist_needs_path(self) -> "ToyDatasetConfig":
        if self.digits == "mnist" and self.mnist_path is None:
            raise ValueError(
                "dataset.digits is 'mnist' but dataset.mnist_path is not set: point it at a "
                "folder holding MNIST's idx files (e.g. ../shared/data/mnist-t10k)"
            )
        return self


class ClassifierConfig(Section):
    """The AU classifier and how it is trained.

    The defaults are a profile that trains reliably on small and noisy sets (300 to 3,000 toy
    images at medium or hard noise, CK+ faces): BCE, Adam at lr 1e-3, batch 32, early stopping on
    validation F1 (macro F1 for emotions; CCC for intensity and valence/arousal, which have no F1)
    after at least 10 epochs, patience 10, up to 200 epochs. The thesis' setting (MSE, RAdam,
    lr 1e-3, batch 100, up to 1000 epochs, patience 20 on validation loss) sits for tens of
    epochs on the all-negative plateau (every AU predicted absent, F1 0) when images are few or
    noisy (300 toy images at medium noise: F1 0 after 30 epochs, out at about epoch 40); it
    stays available exactly as set in
    ``configs/toy-paper.yaml``: ``loss: mse, optimizer: radam, lr: 0.001, batch_size: 100,
    max_epochs: 1000, patience: 20, monitor: val_loss, min_delta: 0, min_epochs: 1``.

    Early stopping (``tasks/train_classifier.py``): an epoch *improves* when ``monitor`` beats the
    value of the last improving epoch by more than ``min_delta`` (absolute, in the monitor's own
    units: e.g. 1e-4 of loss, or 0.01 of F1; lower is better for ``val_loss`` and ``val_rmse``,
    higher for the scores); training stops after ``patience`` epochs without one, never before
    ``min_epochs`` (a ``min_epochs`` above ``max_epochs`` just means no early stop). The weights
    kept are those of the best epoch by ``monitor`` (any margin; ties go to the lower validation
    loss). ``monitor`` values: ``val_loss`` (the training loss on the validation split), ``val_f1``
    (mean F1 over AUs at ``threshold``; macro F1 for emotions), ``val_accuracy`` (emotions),
    ``val_ccc`` and ``val_rmse`` (intensity, valence/arousal); a monitor the label type has no
    score for falls back to that type's first score (``val_f1`` for AU presence and emotion,
    ``val_ccc`` otherwise).

    ``loss``: ``bce`` (on the logits) or ``mse`` (on the sigmoid) for AU labels; ``ccc`` (1 - CCC,
    the metric regressions are judged by) for AU intensity or valence/arousal only, which take
    ``mse`` for either of the others (BCE means nothing on [-1, 1]). Emotions always use
    cross-entropy.
    """

    backbone: Literal["small_cnn", "resnet18"] = "small_cnn"
    width: PositiveInt = 16
    # the side the backbone sees: larger images are area-averaged down to it inside the model (None: their
    # own size). Averaging pools pixel noise finer than the pattern: toy-paper uses 24 (4x4 blocks of 96 px)
    input_size: PositiveInt | None = None
    loss: Literal["mse", "bce", "ccc"] = "bce"
    optimizer: Literal["radam", "adam"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    batch_size: PositiveInt = 32
    max_epochs: PositiveInt = 200
    patience: PositiveInt = 10
    monitor: Literal["val_loss", "val_f1", "val_accuracy", "val_ccc", "val_rmse"] = "val_f1"
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    min_epochs: PositiveInt = 10
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    # std of Gaussian noise added afresh to every training image in every pass, on the [-1, 1] scale the network
    # sees, before ``input_size`` averaging; never at validation or prediction. A regulariser for few noisy
    # images, which a network otherwise memorises noise and all (README, *Noise injection at 3K hard*)
    input_noise: Annotated[float, Field(ge=0)] = 0.0
    # mixed-precision training passes: float16 on CUDA, bfloat16 on a CPU with native bf16, else float32
    # (tasks/device.mixed_precision); validation and predictions stay float32
    amp: bool = True


class AugmentConfig(Section):
    """How many images every non-baseline strategy adds (the same for all, for a fair test)."""

    size: PositiveInt = 9000


class PseudoLabelConfig(Section):
    mode: Literal["hard", "soft"] = "hard"
    confidence: Annotated[float, Field(gt=0.5, lt=1)] | None = None


class ExperimentConfig(Section):
    name: str = "experiment"
    experiment: str = "ausynth"
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0, 1, 2, 3, 4]
    # 'cuda' on a machine without a GPU is refused by loader.check_runtime, not here, so that a
    # GPU config still loads and validates its keys on a laptop.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workspace: Path = Path("workspace")
    dataset: Annotated[ToyDatasetConfig | FaceDatasetConfig, Field(discriminator="kind")] = ToyDatasetConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    # names in tasks/strategies.STRATEGIES
    strategies: Annotated[list[str], Field(min_length=1)] = ["supervised", "upsample", "pseudo_label"]
    augment: AugmentConfig = AugmentConfig()
    pseudo_label: PseudoLabelConfig = PseudoLabelConfig()
    generator: GeneratorConfig = GeneratorConfig()
    semi_supervised_gan: SemiSupervisedGANConfig = SemiSupervisedGANConfig()
    execution: ExecutionConfig = ExecutionConfig()  # how tasks run (configs/execution.py); never changes results

    @field_validator("dataset", mode="before")
    @classmethod
    def _toy_by_default(cls, value):
        """A dataset section without ``kind`` is the toy set, as it was before faces existed."""
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "toy", **value}
        return value

    @field_validator("strategies", "seeds")
    @classmethod
    def _unique(cls, value: list, info) -> list:
        if len(set(value)) != len(value):
            raise ValueError(f"{info.field_name} has duplicates: {value}")
        return value

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: list[str]) -> list[str]:
        from ausynth.tasks.strategies import STRATEGIES  # the registry's modules import this one

        unknown = [name for name in value if name not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}: use names from {list(STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _pool_is_large_enough(self) -> "ExperimentConfig":
        from ausynth.tasks.strategies import STRATEGIES

        toy = isinstance(self.dataset, ToyDatasetConfig)
        needing = [name for name in self.strategies if STRATEGIES[name].needs_pool]
        if toy and needing and self.dataset.unlabelled < self.augment.size:
            raise ValueError(
                f"augment.size ({self.augment.size}) exceeds dataset.unlabelled "
                f"({self.dataset.unlabelled}): strategies {needing} cannot draw that many unlabelled images"
            )
        return self

    @model_validator(mode="after")
    def _neutral_set_given(self) -> "ExperimentConfig":
        if self.generator.neutral_source == "neutral_set" and getattr(self.dataset, "neutral", None) is None:
            raise ValueError("generator.neutral_source is 'neutral_set' but dataset.neutral is not set: give a face "
                             "dataset a neutral set (e.g. dataset.neutral: {manifest: labels.csv, column: emotion, "
                             "value: neutral}) or choose neutral_source auto, labelled or pool")
        return self

    @model_validator(mode="after")
    def _labels_fit(self) -> "ExperimentConfig":
        """Where the config itself says what the labels are (the toy set's AU presence, or a face set's
        ``dataset.label_type``), refuse now what cannot use them; with ``label_type: auto`` the same checks
        run once the data is read, before any training (``tasks/preflight.py``)."""
        from ausynth.tasks import label_types
        from ausynth.tasks.errors import ConfigError
        from ausynth.tasks.generator_kinds import GENERATOR_KINDS
        from ausynth.tasks.strategies import STRATEGIES

        declared = "au_presence" if isinstance(self.dataset, ToyDatasetConfig) else self.dataset.label_type
        if declared == "auto":
            return self
        try:
            if any(STRATEGIES[name].needs_generated for name in self.strategies):
                GENERATOR_KINDS[self.generator.kind].check_label_type(declared)
            label_types.label_type(declared).loss(self.classifier.loss)
        except ConfigError as err:
            raise ValueError(f"dataset.label_type is {declared!r}: {err}") from None
        return self
