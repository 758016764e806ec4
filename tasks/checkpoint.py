"""Generator checkpoints: what they hold, how they are written, read and checked.

A checkpoint is one ``torch.save`` file holding only tensors and plain JSON-like values (both
networks, both optimisers, the AMP scalers, the step, every RNG state (the training loop's own
generator's among them), the config, the architecture and the training history), so
``torch.load(..., weights_only=True)`` can read it without executing pickled code. It is written
to a temporary file and renamed over the old one: a run killed mid-write leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ausynth.tasks.errors import CheckpointError
from ausynth.tasks.generator_kinds import Architecture, generator_kind

FORMAT = 1


@dataclass
class TrainedGenerator:
    """A generator ready to translate images (in eval mode), and where it came from."""

    model: nn.Module
    architecture: Architecture
    checkpoint: Path
    step: int
    history: list[dict[str, float]] = field(default_factory=list)


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The training loop's own generator (when given), torch's global (CPU and CUDA), numpy's and python's
    RNG states, as tensors and plain values."""
    numpy_state = np.random.get_state(legacy=False)
    own = {"generator": generator.get_state()} if generator is not None else {}
    return {**own,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> bool:
    """Restore the states of ``rng_state``; returns False when ``generator`` was given but the checkpoint has
    no state for it (one written before the loop had its own generator)."""
    restored = True
    if generator is not None:
        if "generator" in state:
            generator.set_state(state["generator"])
        else:
            restored = False
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    return restored


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
        raise CheckpointError(f"generator checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        raise CheckpointError(f"generator checkpoint {path} cannot be read ({type(err).__name__}: it is truncated "
                              "or not a torch file): point generator.checkpoint at a whole one") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "architecture" not in state:
        raise CheckpointError(f"{path} is not an ausynth generator checkpoint (format {FORMAT})")
    if expected is not None:
        expected.require(Architecture.from_dict(state["architecture"]), path)
    return state


def load_generator(path: Path, device: torch.device, expected: Architecture | None = None) -> TrainedGenerator:
    """The generator of a checkpoint, built from the architecture stored in it."""
    state = read_checkpoint(path, expected)
    architecture = Architecture.from_dict(state["architecture"])
    model = generator_kind(architecture.kind).generator(architecture)
    model.load_state_dict(state["generator"])
    return TrainedGenerator(model.to(device).eval(), architecture, Path(path), state["step"], state["history"])
