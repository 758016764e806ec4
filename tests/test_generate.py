"""AU-isolated generation: neutral sources, counts and labels, the oracle check, identity, grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ausynth.configs.generator import GeneratorConfig
from ausynth.tasks.checkpoint import Architecture, TrainedGenerator
from ausynth.tasks.generate import (example_grid, generate_isolated, identity_distance, keep_passing,
                                    neutral_sources, quality_check, total_images)
from ausynth.tasks.imageset import ImageSet

CPU = torch.device("cpu")
COLUMNS = ["AU1", "AU2", "AU3", "AU4"]
SIZE, CELL = 32, 16


class CellOracle(nn.Module):
    """Sees label k exactly when cell k (2x2 grid, row-major) is mostly bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 50 * F.avg_pool2d(x.mean(1, keepdim=True), CELL).flatten(1)


def grid_images(active: list[list[int]]) -> np.ndarray:
    """One dark 32x32 image per entry, with the listed cells (0-based) lit."""
    images = np.full((len(active), SIZE, SIZE, 1), 10, dtype=np.uint8)
    for i, cells in enumerate(active):
        for k in cells:
            r, c = divmod(k, 2)
            images[i, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = 240
    return images


def pool_set(labels: np.ndarray, images: np.ndarray | None = None) -> ImageSet:
    frame = pd.DataFrame(labels.astype(np.float32), columns=COLUMNS)
    frame.insert(0, "subject", [f"s{i}" for i in range(len(labels))])
    frame.insert(1, "origin", np.where(np.isnan(labels).any(axis=1), "unlabelled", "labelled"))
    if images is None:
        images = grid_images([[k for k in range(4) if row[k] > 0.5] for row in np.nan_to_num(labels)])
    return ImageSet(images, frame, list(COLUMNS))


def untrained(kind: str) -> TrainedGenerator:
    arch = Architecture(kind, "au_presence", 4, 0, (SIZE, SIZE, 1), tuple(COLUMNS))
    torch.manual_seed(0)
    return TrainedGenerator(arch.generator().eval(), arch, Path("untrained.pt"), 0)


def generated_set(active: list[list[int]], targets: list[int], sources: list[int]) -> ImageSet:
    k = len(COLUMNS)
    frame = pd.DataFrame(np.eye(k, dtype=np.float32)[targets], columns=COLUMNS)
    frame.insert(0, "subject", "s")
    frame.insert(1, "origin", "generated")
    frame["source_index"] = sources
    frame["target"] = [COLUMNS[t] for t in targets]
    return ImageSet(grid_images(active), frame, list(COLUMNS))


def test_neutral_sources_from_labels_and_scores() -> None:
    nan = np.nan
    labels = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [nan] * 4, [nan] * 4, [0, 0, 0, 0]])
    scores = np.array([[0.9] * 4, [0.9] * 4, [0.1, 0.2, 0.3, 0.1], [0.1, 0.6, 0.1, 0.1], [0.9] * 4])
    index, source_labels = neutral_sources(pool_set(labels), 0.5, scores)
    assert index.tolist() == [0, 2, 4]  # labels decide where present, scores only where absent
    assert np.allclose(source_labels, [[0, 0, 0, 0], [0.1, 0.2, 0.3, 0.1], [0, 0, 0, 0]])


def test_no_neutral_image_explains_the_threshold() -> None:
    labels = np.array([[1, 0, 0, 0], [np.nan] * 4, [np.nan] * 4])
    scores = np.array([[0.0] * 4, [0.1, 0.7, 0.2, 0.1], [0.9, 0.1, 0.1, 0.1]])
    with pytest.raises(ValueError) as error:
        neutral_sources(pool_set(labels), 0.5, scores)
    message = str(error.value)
    assert "none of the 1 labelled images" in message and "neutral_threshold=0.5" in message
    assert "min 0.700" in message and "max 0.900" in message


def test_unlabelled_pool_needs_a_classifier() -> None:
    with pytest.raises(ValueError, match="pass a classifier"):
        neutral_sources(pool_set(np.full((2, 4), np.nan)), 0.5, None)


@pytest.mark.parametrize("kind", ["em", "stargan"])
def test_generation_counts_and_labels(kind: str) -> None:
    labels = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [np.nan] * 4])
    pool = pool_set(labels, grid_images([[], [0, 1], [], []]))
    cfg = GeneratorConfig(kind=kind, intensity=0.7)
    out = generate_isolated(untrained(kind), pool, cfg, count=10, device=CPU, classifier=CellOracle(), seed=1)
    assert len(out) == 10 and out.image_shape == (SIZE, SIZE, 1) and out.label_columns == COLUMNS
    frame = out.frame
    assert set(frame["origin"]) == {"generated"}
    assert set(frame["source_index"]) <= {0, 2, 3}  # the neutral rows only; row 3 is scored by the classifier
    assert frame["target"].tolist() == (COLUMNS * 3)[:10]  # every source gives each label in turn
    asked = 0.7 if kind == "em" else 1.0  # StarGAN's AU domains are binary: it asks for presence
    expected = np.tile(np.eye(4, dtype=np.float32) * asked, (3, 1))[:10]
    assert np.array_equal(out.labels, expected)
    assert (frame["subject"] == pool.frame["subject"].to_numpy()[frame["source_index"]]).all()
    assert out.meta["generator_kind"] == kind


def test_total_images() -> None:
    assert total_images(GeneratorConfig(), 900, 9) == 900
    assert total_images(GeneratorConfig(images_per_au=5), 900, 9) == 45


def test_quality_check_on_a_known_case() -> None:
    # AU1: one clean image, one that also lights cell 2; AU2: one clean; AU3: one that shows nothing.
    generated = generated_set(active=[[0], [0, 1], [1], []], targets=[0, 0, 1, 2], sources=[0, 0, 0, 0])
    table, passed = quality_check(generated, CellOracle(), CPU, threshold=0.5)
    assert passed.tolist() == [True, False, True, False]
    assert table.loc["AU1"].tolist() == [1.0, 0.5, 0.5, 2]
    assert table.loc["AU2"].tolist() == [1.0, 0.0, 1.0, 1]
    assert table.loc["AU3"].tolist() == [0.0, 0.0, 0.0, 1]
    assert table.loc["AU4", "images"] == 0 and np.isnan(table.loc["AU4", "pass_rate"])
    assert len(keep_passing(generated, passed)) == 2


def test_identity_distance_ignores_the_target_cell() -> None:
    pool = pool_set(np.zeros((1, 4)))
    # both change cell 0 (ignored when the target is AU1); the second also lights cell 3
    generated = generated_set(active=[[0], [0, 3]], targets=[0, 0], sources=[0, 0])
    distance = identity_distance(generated, pool, grid=2, cell=CELL)
    assert distance[0] == 0.0
    assert distance[1] == pytest.approx((240 - 10) / 255 / 3, rel=1e-5)  # one of the three other cells, fully changed


def test_example_grid(tmp_path: Path) -> None:
    pool = pool_set(np.zeros((2, 4)))
    generated = generated_set(active=[[0], [1], [2], [3], [0]], targets=[0, 1, 2, 3, 0], sources=[0] * 4 + [1])
    path = example_grid(generated, pool, tmp_path / "grid.png")
    width, height = Image.open(path).size
    assert (width, height) == (5 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)  # 2 sources x (source + 4 labels)
