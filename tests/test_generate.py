"""AU-isolated generation: neutral sources, counts and labels, the oracle check, verified generation, grids."""

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
from ausynth.tasks.checkpoint import TrainedGenerator
from ausynth.tasks.errors import DataError
from ausynth.tasks.generate import (example_grid, generate_isolated, generate_verified, neutral_sources,
                                    oracle_verdict, quality_table, quotas, shifted_quotas, sources_showing_a_label,
                                    total_images)
from ausynth.tasks.generator_kinds import Architecture, generator_kind
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
    return TrainedGenerator(generator_kind(kind).generator(arch).eval(), arch, Path("untrained.pt"), 0)


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
    # labels decide where present, scores only where absent; labelled neutral rows first (most neutral first)
    assert index.tolist() == [0, 4, 2]
    assert np.allclose(source_labels, [[0, 0, 0, 0], [0, 0, 0, 0], [0.1, 0.2, 0.3, 0.1]])


def test_no_neutral_image_explains_the_threshold() -> None:
    labels = np.array([[1, 0, 0, 0], [np.nan] * 4, [np.nan] * 4])
    scores = np.array([[0.0] * 4, [0.1, 0.7, 0.2, 0.1], [0.9, 0.1, 0.1, 0.1]])
    with pytest.raises(DataError) as error:
        neutral_sources(pool_set(labels), 0.5, scores)
    message = str(error.value)
    assert "none of the 1 labelled images" in message and "neutral_threshold=0.5" in message
    assert "min 0.700" in message and "max 0.900" in message


def test_unlabelled_pool_needs_the_teachers_scores() -> None:
    with pytest.raises(ValueError, match="2 pool images have no labels: pass the teacher's scores"):
        neutral_sources(pool_set(np.full((2, 4), np.nan)), 0.5, None)


def test_neutral_sources_can_be_limited_to_labelled_or_pool_rows() -> None:
    labels = np.array([[0, 0, 0, 0], [np.nan] * 4, [0, 0, 0, 0]])
    scores = np.array([[np.nan] * 4, [0.1, 0.1, 0.2, 0.1], [np.nan] * 4])
    assert neutral_sources(pool_set(labels), 0.5, scores, "labelled")[0].tolist() == [0, 2]
    assert neutral_sources(pool_set(labels), 0.5, scores, "pool")[0].tolist() == [1]
    with pytest.raises(DataError, match="neutral_source: pool"):
        neutral_sources(pool_set(labels[[0, 2]]), 0.5, scores[[0, 2]], "pool")


@pytest.mark.parametrize("kind", ["em", "stargan"])
def test_generation_counts_and_labels(kind: str) -> None:
    labels = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [np.nan] * 4, [0, 0, 0, 0], [np.nan] * 4])
    scores = np.array([[np.nan] * 4, [np.nan] * 4, [0.3, 0.1, 0.1, 0.1], [np.nan] * 4, [0.9, 0.1, 0.1, 0.1]])
    pool = pool_set(labels, grid_images([[], [0, 1], [], [], [0]]))
    cfg = GeneratorConfig(kind=kind, intensity=0.7)
    out = generate_isolated(untrained(kind), pool, cfg, count=10, device=CPU, scores=scores)
    assert len(out) == 10 and out.image_shape == (SIZE, SIZE, 1) and out.label_columns == COLUMNS
    frame = out.frame
    assert set(frame["origin"]) == {"generated"}
    # the neutral rows, most neutral first: labelled ones (0, 3), then pool row 2 (peak score 0.3);
    # pool row 4 (score 0.9) is not neutral
    assert frame["source_index"].tolist() == [0] * 4 + [3] * 4 + [2] * 2
    assert frame["target"].tolist() == (COLUMNS * 3)[:10]  # every source gives each label in turn
    asked = 0.7 if kind == "em" else 1.0  # StarGAN's AU domains are binary: it asks for presence
    expected = np.tile(np.eye(4, dtype=np.float32) * asked, (3, 1))[:10]
    assert np.array_equal(out.labels, expected)
    assert (frame["subject"] == pool.frame["subject"].to_numpy()[frame["source_index"]]).all()
    assert out.meta["generator_kind"] == kind


def test_a_large_generation_reports_its_progress(caplog, monkeypatch) -> None:
    monkeypatch.setattr("ausynth.tasks.generate.IMAGES_PER_CALL", 8)  # 2 sources of 4 labels a call: 6 calls
    pool = pool_set(np.zeros((12, 4)))
    with caplog.at_level("INFO", logger="ausynth"):
        out = generate_isolated(untrained("em"), pool, GeneratorConfig(kind="em"), count=48, device=CPU)
    assert len(out) == 48
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("generating:")] == [
        f"generating: {n} of 48 images" for n in (8, 16, 24, 32, 40)]


def test_a_generator_for_other_labels_is_refused() -> None:
    pool = pool_set(np.zeros((2, 4)))
    pool = ImageSet(pool.images, pool.frame.rename(columns={"AU4": "AU9"}), ["AU1", "AU2", "AU3", "AU9"])
    with pytest.raises(ValueError, match="for labels \\['AU1', 'AU2', 'AU3', 'AU4'\\]"):
        generate_isolated(untrained("em"), pool, GeneratorConfig(), count=4, device=CPU)


def test_total_images_and_quotas() -> None:
    assert total_images(GeneratorConfig(), 900, 9) == 900
    assert total_images(GeneratorConfig(images_per_au=5), 900, 9) == 45
    assert quotas(10, 4).tolist() == [3, 3, 2, 2] and quotas(8, 4).sum() == 8


def test_quality_table_and_verdict_on_a_known_case() -> None:
    # AU1: one clean image, one that also lights cell 2; AU2: one clean; AU3: one that shows nothing.
    generated = generated_set(active=[[0], [0, 1], [1], []], targets=[0, 0, 1, 2], sources=[0, 0, 0, 0])
    assert oracle_verdict(generated, CellOracle(), CPU, threshold=0.5).tolist() == [True, False, True, False]
    table = quality_table(generated, CellOracle(), CPU, threshold=0.5)
    columns = ["share_target_shown", "share_other_shown", "pass_rate", "images"]
    assert table.loc["AU1", columns].tolist() == [1.0, 0.5, 0.5, 2]
    assert table.loc["AU2", columns].tolist() == [1.0, 0.0, 1.0, 1]
    assert table.loc["AU3", columns].tolist() == [0.0, 0.0, 0.0, 1]
    assert table.loc["AU4", "images"] == 0 and np.isnan(table.loc["AU4", "pass_rate"])


def test_quality_table_calibrates_the_oracle_on_real_single_label_images() -> None:
    generated = generated_set(active=[[0], [0, 1]], targets=[0, 0], sources=[0, 0])
    # real AU1-alone images: one the oracle passes, one it misses (cell dark); a two-AU image is not used
    real = pool_set(np.array([[1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]]), grid_images([[0], [], [0, 1]]))
    table = quality_table(generated, CellOracle(), CPU, threshold=0.5, real=real)
    assert table.loc["AU1", "real_pass_rate"] == 0.5 and table.loc["AU1", "real_images"] == 2
    assert table.loc["AU1", "relative_pass_rate"] == pytest.approx(0.5 / 0.5)
    assert np.isnan(table.loc["AU2", "real_pass_rate"])
    # the closest reference where few real images show one label alone: recall on every image showing it
    assert table.loc["AU1", "real_target_shown"] == pytest.approx(2 / 3) and table.loc["AU1", "real_shown_images"] == 3
    assert table.loc["AU1", "relative_target_shown"] == pytest.approx(1.0 / (2 / 3))
    assert table.loc["AU2", "real_target_shown"] == 1.0 and np.isnan(table.loc["AU3", "real_target_shown"])


def test_sources_the_oracle_already_sees_a_label_on_are_counted_once_each() -> None:
    pool = pool_set(np.zeros((3, 4)), grid_images([[], [2], []]))  # labelled neutral, yet source 1 shows AU3
    generated = generated_set(active=[[0], [1], [0], [1]], targets=[0, 1, 0, 1], sources=[0, 0, 1, 1])
    assert sources_showing_a_label(generated, pool, CellOracle(), CPU, threshold=0.5) == 0.5  # sources 0 and 1


class FirstCellOracle(nn.Module):
    """Sees AU1 on every image and nothing else: only AU1 targets ever pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((len(x), 4), -50.0)
        out[:, 0] = 50.0
        return out


def test_verified_generation_keeps_exactly_the_quota_or_says_what_is_short() -> None:
    pool = pool_set(np.zeros((6, 4)))
    always = GeneratorConfig(kind="stargan", max_rounds=2)
    with pytest.raises(DataError, match="short by \\{'AU2': 2, 'AU3': 2, 'AU4': 2\\}"):
        generate_verified(untrained("stargan"), pool, always, 8, CPU, None, FirstCellOracle(), 0.5)
    filled = always.model_copy(update={"on_shortfall": "fill"})
    kept, tried = generate_verified(untrained("stargan"), pool, filled, 8, CPU, None, FirstCellOracle(), 0.5)
    assert len(kept) == 8 and len(tried) == 2 * 2 * 4  # two rounds of two sources, four labels each
    assert kept.frame["target"].value_counts().to_dict() == {c: 2 for c in COLUMNS}
    assert kept.frame.groupby("target")["passed"].all().to_dict() == {"AU1": True, "AU2": False, "AU3": False,
                                                                      "AU4": False}


def test_a_shortfall_can_go_to_the_labels_that_pass_and_only_passing_images_are_kept() -> None:
    pool = pool_set(np.zeros((6, 4)))
    shift = GeneratorConfig(kind="stargan", max_rounds=3, on_shortfall="shift")
    kept, tried = generate_verified(untrained("stargan"), pool, shift, 3, CPU, None, FirstCellOracle(), 0.5)
    assert len(tried) == 3 * 1 * 4 and len(kept) == 3 and kept.frame["passed"].all()  # 3 rounds of 1 source
    assert set(kept.frame["target"]) == {"AU1"}
    with pytest.raises(DataError, match="3 passed in all.*on_shortfall: fill to add"):  # AU1 alone passes, 3 of 4
        generate_verified(untrained("stargan"), pool, shift, 4, CPU, None, FirstCellOracle(), 0.5)


@pytest.mark.parametrize(("found", "count", "expected"), [
    ([10, 10, 10], 9, [3, 3, 3]), ([0, 10, 10], 9, [0, 5, 4]), ([1, 2, 30], 12, [1, 2, 9]),
    ([5, 0, 2], 7, [5, 0, 2]), ([4, 4, 1], 8, [4, 3, 1]),
])
def test_shifted_quotas_fill_count_as_evenly_as_the_passing_images_allow(found, count, expected) -> None:
    quota = shifted_quotas(np.array(found), count)
    assert quota.tolist() == expected and quota.sum() == count and (quota <= np.array(found)).all()


def test_example_grid_marks_failed_images(tmp_path: Path) -> None:
    pool = pool_set(np.zeros((2, 4)))
    generated = generated_set(active=[[0], [1], [2], [3], [0]], targets=[0, 1, 2, 3, 0], sources=[0] * 4 + [1])
    generated.frame["passed"] = [True, False, True, True, True]
    figure = example_grid(generated, pool)
    axes = figure.get_axes()
    assert len(axes) == 2 * 5  # 2 sources x (source + 4 labels)
    assert [ax.get_title() for ax in axes[:5]] == ["source", *COLUMNS]
    red = [i for i, ax in enumerate(axes) if ax.spines["top"].get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
    assert red == [2]  # source 0's AU2 image failed
    assert len(axes[6].get_images()) == 1 and not axes[7].get_images()  # source 1 has only an AU1 image
    figure.savefig(tmp_path / "grid.png")
    assert Image.open(tmp_path / "grid.png").size[0] > 100
