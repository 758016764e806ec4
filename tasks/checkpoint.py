"""Generator checkpoints: what they hold, how they are written, read and checked.

A checkpoint is one ``torch.save`` file holding only tensors and plain JSON-like values (both
networks, both optimisers, the AMP scalers, the step, every RNG state, the config, the
architecture and the training history), so ``torch.load(..., weights_only=True)`` can read it
without executing pickled code. It is written to a temporary file and renamed over the old
one: a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ausynth.configs.generator import GeneratorConfig
from ausynth.models.expression_manipulator import ExpressionManipulator
from ausynth.models.patch_discriminator import PatchDiscriminator
from ausynth.models.stargan import StarGANGenerator
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.train_classifier import label_type_of

FORMAT = 1
AU_LABEL_TYPES = ("au_presence", "au_intensity")
GENERATOR_LABEL_TYPES = {"em": AU_LABEL_TYPES, "stargan": (*AU_LABEL_TYPES, "emotion")}


class CheckpointMismatch(ValueError):
    """A checkpoint was made for another network or data shape than the one asked for."""


@dataclass(frozen=True)
class Architecture:
    """Everything that fixes the networks' shapes; a checkpoint loads only into the same one."""

    kind: str
    label_type: str
    base_channels: int
    n_res_blocks: int
    image_shape: tuple[int, int, int]  # (H, W, C), as ImageSet.image_shape
    label_columns: tuple[str, ...]

    @classmethod
    def of(cls, cfg: GeneratorConfig, data: ImageSet) -> "Architecture":
        """The networks ``cfg`` asks for, sized for ``data``'s images and labels."""
        label_type = label_type_of(data)
        if label_type not in GENERATOR_LABEL_TYPES[cfg.kind]:
            raise ValueError(f"generator.kind {cfg.kind!r} cannot condition on {label_type!r} labels: it takes "
                             f"{' or '.join(GENERATOR_LABEL_TYPES[cfg.kind])}"
                             + (" (use kind 'stargan' for emotion categories)" if label_type == "emotion" else ""))
        return cls(cfg.kind, label_type, cfg.base_channels, cfg.n_res_blocks, data.image_shape,
                   tuple(data.label_columns))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Architecture":
        return cls(**{**data, "image_shape": tuple(data["image_shape"]), "label_columns": tuple(data["label_columns"])})

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data, "image_shape": list(self.image_shape), "label_columns": list(self.label_columns)}

    def describe(self) -> str:
        h, w, c = self.image_shape
        return (f"{self.kind} (base_channels {self.base_channels}, n_res_blocks {self.n_res_blocks}, "
                f"{self.label_type} labels {list(self.label_columns)}) for {h}x{w}x{c} images")

    def generator(self) -> nn.Module:
        cls = ExpressionManipulator if self.kind == "em" else StarGANGenerator
        return cls(self.image_shape[2], len(self.label_columns), self.base_channels, self.n_res_blocks)

    def discriminator(self) -> PatchDiscriminator:
        h, w, c = self.image_shape
        return PatchDiscriminator(c, (h, w), len(self.label_columns), self.base_channels)

    def require(self, found: "Architecture", path: Path) -> None:
        """Raise, naming both, unless ``found`` (from ``path``) is this architecture."""
        if found != self:
            fields = [name for name in asdict(self) if getattr(self, name) != getattr(found, name)]
            raise CheckpointMismatch(
                f"generator checkpoint {path} does not fit (differs in {', '.join(fields)}):\n"
                f"  expected: {self.describe()}\n  found:    {found.describe()}\n"
                "train a new generator for this data, or point generator.checkpoint at a matching one"
            )


@dataclass
class TrainedGenerator:
    """A generator ready to translate images (in eval mode), and where it came from."""

    model: nn.Module
    architecture: Architecture
    checkpoint: Path
    step: int
    history: list[dict[str, float]] = field(default_factory=list)


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as tensors and plain values."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: a temporary file beside ``path``, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        torch.save({"format": FORMAT, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: Path, expected: Architecture | None = None) -> dict[str, Any]:
    """Load on the CPU with ``weights_only=True``; check the architecture when one is expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generator checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT or "architecture" not in state:
        raise CheckpointMismatch(f"{path} is not an ausynth generator checkpoint (format {FORMAT})")
    if expected is not None:
        expected.require(Architecture.from_dict(state["architecture"]), path)
    return state


def load_generator(path: Path, device: torch.device, expected: Architecture | None = None) -> TrainedGenerator:
    """The generator of a checkpoint, built from the architecture stored in it."""
    state = read_checkpoint(path, expected)
    architecture = Architecture.from_dict(state["architecture"])
    model = architecture.generator()
    model.load_state_dict(state["generator"])
    return TrainedGenerator(model.to(device).eval(), architecture, Path(path), state["step"], state["history"])
