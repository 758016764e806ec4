"""Generator kinds by name: which networks, which labels they take, how labels condition them.

A kind knows its generator and critic networks and its ``Objective``: how a (source, target)
label pair becomes the generator's condition, which conditional loss the critic's label head
uses, which reconstruction terms apply with which configured weight, and whether the generator
starts from the image or from noise (cgan). The training loop (``gan_training``) and the
generation stage only talk to these objects, so a new kind is a class here and its line in
``GENERATOR_KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ausynth.configs.generator import GeneratorConfig
from ausynth.models import gan_losses as L
from ausynth.models.cgan import CGANDiscriminator, CGANGenerator
from ausynth.models.expression_manipulator import ExpressionManipulator
from ausynth.models.patch_discriminator import PatchDiscriminator
from ausynth.models.stargan import StarGANGenerator
from ausynth.tasks import au_regions, label_types
from ausynth.tasks.errors import CheckpointError, ConfigError
from ausynth.tasks.imageset import ImageSet

AU_LABEL_TYPES = ("au_presence", "au_intensity")
ISOLATED_LABEL_TYPES = (*AU_LABEL_TYPES, "emotion")  # label types with single labels to show alone


@dataclass(frozen=True)
class Objective:
    """How one kind turns labels into a condition and what its losses weigh."""

    relative: bool  # EM: condition on target - source; StarGAN: on the target itself
    targets: str  # 'graded' (as they are: intensities, valence/arousal), 'binary' (AU presence), 'category' (one-hot)
    cond_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    cycle_weight: float  # G(G(x, c'), c) = x
    identity_weight: float  # G(x, 'no change') = x; EM only
    noise_dim: int = 0  # cgan: the generator draws from noise of this size instead of editing an image
    critic_reads_labels: bool = False  # cgan: D(x, c) rather than D(x)

    def inputs(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """What the generator starts from for the images ``x``: ``x`` itself, or one noise vector per image,
        drawn on the CPU from ``generator`` (default: torch's global one)."""
        if not self.noise_dim:
            return x
        return torch.randn(len(x), self.noise_dim, generator=generator).to(x.device)

    def labels(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw >= 0.5).float() if self.targets == "binary" else raw

    def condition(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return target - source if self.relative else target

    def single_targets(self, n_labels: int, intensity: float, device: torch.device) -> torch.Tensor:
        """(K, K): row k asks for label k alone; at ``intensity`` where targets are graded, else at 1."""
        return torch.eye(n_labels, device=device) * (intensity if self.targets == "graded" else 1.0)


@dataclass(frozen=True)
class Architecture:
    """Everything that fixes the networks' shapes; a checkpoint loads only into the same one."""

    kind: str
    label_type: str
    base_channels: int
    n_res_blocks: int
    image_shape: tuple[int, int, int]  # (H, W, C), as ImageSet.image_shape
    label_columns: tuple[str, ...]
    options: tuple[tuple[str, Any], ...] = ()  # the kind's own shape settings (cgan: generator.cgan), sorted

    @classmethod
    def of(cls, cfg: GeneratorConfig, data: ImageSet) -> "Architecture":
        """The networks ``cfg`` asks for, sized for ``data``'s images and labels."""
        kind = generator_kind(cfg.kind)
        label_type = label_types.of(data).name
        kind.check_label_type(label_type)
        return cls(cfg.kind, label_type, cfg.base_channels, cfg.n_res_blocks, data.image_shape,
                   tuple(data.label_columns), tuple(sorted(kind.options(cfg, data).items())))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Architecture":
        return cls(**{**data, "image_shape": tuple(data["image_shape"]), "label_columns": tuple(data["label_columns"]),
                      "options": tuple(sorted(data.get("options", {}).items()))})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_shape": list(self.image_shape), "label_columns": list(self.label_columns),
                "options": dict(self.options)}

    def describe(self) -> str:
        h, w, c = self.image_shape
        options = "".join(f", {name} {value}" for name, value in self.options)
        return (f"{self.kind} (base_channels {self.base_channels}, n_res_blocks {self.n_res_blocks}{options}, "
                f"{self.label_type} labels {list(self.label_columns)}) for {h}x{w}x{c} images")

    def require(self, found: "Architecture", path: object) -> None:
        """Raise, naming both, unless ``found`` (from the checkpoint at ``path``) is this architecture."""
        if found != self:
            fields = [name for name in asdict(self) if getattr(self, name) != getattr(found, name)]
            raise CheckpointError(
                f"generator checkpoint {path} does not fit (differs in {', '.join(fields)}):\n"
                f"  expected: {self.describe()}\n  found:    {found.describe()}\n"
                "train a new generator for this data, or point generator.checkpoint at a matching one")


class GeneratorKind:
    """One conditional GAN: its networks, the label types it takes and its objective."""

    name: ClassVar[str]
    label_types: ClassVar[tuple[str, ...]]
    needs_source: ClassVar[bool] = True  # isolated images are edits of neutral sources

    def check_label_type(self, label_type: str) -> None:
        """Refuse labels this kind cannot condition on, naming the kinds that can."""
        if label_type not in self.label_types:
            takers = [name for name, other in GENERATOR_KINDS.items() if label_type in other.label_types]
            raise ConfigError(f"generator.kind {self.name!r} cannot condition on {label_type!r} labels: it takes "
                              f"{' or '.join(self.label_types)}"
                              + (f" (use kind {' or '.join(map(repr, takers))} for them)" if takers else ""))

    def options(self, cfg: GeneratorConfig, data: ImageSet) -> dict[str, Any]:
        """The kind's own settings that shape its networks for ``data`` (recorded in the ``Architecture``)."""
        if cfg.edit_regions:
            raise ConfigError(f"generator.edit_regions needs a generator conditioned on the change asked for "
                              f"(kind 'em'), not {self.name!r}: set it to false or use kind 'em'")
        return {}

    def generator(self, arch: Architecture) -> nn.Module:
        raise NotImplementedError

    def discriminator(self, arch: Architecture) -> nn.Module:
        h, w, c = arch.image_shape
        return PatchDiscriminator(c, (h, w), len(arch.label_columns), arch.base_channels)

    def objective(self, cfg: GeneratorConfig, label_type: str) -> Objective:
        raise NotImplementedError


class ExpressionManipulatorKind(GeneratorKind):
    """Ling et al. (ECCV 2020): relative AUs, AU regression, cycle and identity losses."""

    name = "em"
    label_types = AU_LABEL_TYPES

    def options(self, cfg, data):
        return {"edit_regions": au_regions.region_map(data)} if cfg.edit_regions else {}

    def generator(self, arch):
        h, w, c = arch.image_shape
        map_name = dict(arch.options).get("edit_regions")
        regions = None if map_name is None else torch.from_numpy(
            au_regions.edit_regions(map_name, list(arch.label_columns), h, w))
        return ExpressionManipulator(c, len(arch.label_columns), arch.base_channels, arch.n_res_blocks, regions)

    def objective(self, cfg, label_type):
        return Objective(True, "graded", L.au_regression_loss, cfg.lambda_cycle, cfg.lambda_identity)


class StarGANKind(GeneratorKind):
    """Choi et al. (CVPR 2018): absolute target domains (binary AUs or one emotion), classification and cycle losses."""

    name = "stargan"
    label_types = (*AU_LABEL_TYPES, "emotion")

    def generator(self, arch):
        return StarGANGenerator(arch.image_shape[2], len(arch.label_columns), arch.base_channels, arch.n_res_blocks)

    def objective(self, cfg, label_type):
        if label_type == "emotion":
            return Objective(False, "category", L.category_loss, cfg.lambda_cycle, 0.0)
        return Objective(False, "binary", L.multilabel_loss, cfg.lambda_cycle, 0.0)


class ConditionalGANKind(GeneratorKind):
    """A conditional DCGAN from noise with an AC-GAN discriminator that reads the label (models/cgan.py).

    It edits no image, so it has no cycle or identity loss and its isolated images come straight
    from one-hot targets, with no neutral source. Binary AUs and emotion categories are classified
    by the label head; AU intensities and valence/arousal regressed.
    """

    name = "cgan"
    label_types = (*AU_LABEL_TYPES, "emotion", "valence_arousal")
    needs_source = False

    def options(self, cfg, data):
        return {**super().options(cfg, data), **cfg.cgan.model_dump()}

    def generator(self, arch):
        h, w, c = arch.image_shape
        o = dict(arch.options)
        return CGANGenerator(c, (h, w), len(arch.label_columns), o["noise_dim"], arch.base_channels, o["upsampling"],
                             o["activation"])

    def discriminator(self, arch):
        h, w, c = arch.image_shape
        return CGANDiscriminator(c, (h, w), len(arch.label_columns), arch.base_channels,
                                 dict(arch.options)["conditioning"])

    def objective(self, cfg, label_type):
        targets, loss = {"au_presence": ("binary", L.multilabel_loss),
                         "emotion": ("category", L.category_loss)}.get(label_type, ("graded", L.au_regression_loss))
        return Objective(False, targets, loss, 0.0, 0.0, noise_dim=cfg.cgan.noise_dim, critic_reads_labels=True)


GENERATOR_KINDS: dict[str, GeneratorKind] = {k.name: k for k in (ExpressionManipulatorKind(), StarGANKind(),
                                                                  ConditionalGANKind())}


def generator_kind(name: str) -> GeneratorKind:
    try:
        return GENERATOR_KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown generator.kind {name!r}: use one of {list(GENERATOR_KINDS)}") from None
