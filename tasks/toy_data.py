"""The toy AU dataset of MISSION.md: 96x96 images, a 3x3 grid of 32x32 cells.

'AU k' (k = 1..9) is active when cell k (row-major) shows an image of digit k. Each AU is
active with probability ``p_active``; AU2 and AU3 are drawn as a correlated pair such that
P(AU3 | AU2) = P(AU2 | AU3) = ``p_correlated`` while both keep the marginal ``p_active``
(joint: both with p*c, only one with p*(1-c) each). The test set is AU-independent: exactly
one AU per image, the same count per AU, so a classifier that learnt 'AU2 means AU3' shows it
as false positives.

Pixel scale: digits are drawn on [0, 1] (stroke 1, background 0); the noise of a difficulty
(medium: N(0.5, 1), hard: N(1, 5)) is added on that scale, then images are clipped to [0, 1]
and stored as uint8 (x 255).

The digit image is the toy's identity: train/unlabelled grids and test grids take their digits
from disjoint sets of digit images. Digits come from scikit-learn's bundled 8x8 digits
(offline, upsampled to 32x32) or from MNIST idx files at a configured path.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ausynth.configs.schema import ToyDatasetConfig
from ausynth.tasks.imageset import ImageSet

GRID = 3
CELL = 32
SIZE = GRID * CELL
N_AUS = GRID * GRID
AU_COLUMNS = [f"AU{k}" for k in range(1, N_AUS + 1)]
NOISE = {"clean": (0.0, 0.0), "medium": (0.5, 1.0), "hard": (1.0, 5.0)}
TEST_POOL_FRACTION = 0.3


def _to_cells(images: np.ndarray) -> np.ndarray:
    """Resize (N, h, w) digit images in [0, 1] to (N, 32, 32) float32."""
    tensor = torch.from_numpy(images.astype(np.float32))[:, None]
    if tensor.shape[-1] == 28:
        return F.pad(tensor, (2, 2, 2, 2))[:, 0].numpy()
    return F.interpolate(tensor, size=(CELL, CELL), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder: Path, kind: str) -> Path:
    matches = sorted(folder.glob(f"*{kind}-idx*"))
    if not matches:
        raise FileNotFoundError(f"no MNIST '*{kind}-idx*' file in {folder}: expected e.g. t10k-{kind}-idx3-ubyte.gz")
    return matches[0]


def load_digits(source: str, mnist_path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Digit images as (N, 32, 32) float32 in [0, 1] and their digit labels (N,)."""
    if source == "mnist":
        folder = Path(mnist_path)  # type: ignore[arg-type]
        images = _read_idx(_find_idx(folder, "images")).astype(np.float32) / 255.0
        return _to_cells(images), _read_idx(_find_idx(folder, "labels")).astype(np.int64)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return _to_cells(bunch.images / 16.0), bunch.target.astype(np.int64)


def split_digit_pools(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train/test index pools of digit images, stratified by digit."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(1, N_AUS + 1):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n_test = max(1, int(round(len(idx) * TEST_POOL_FRACTION)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.concatenate(train), np.concatenate(test)


def sample_correlated_labels(n: int, p_active: float, p_correlated: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 9) binary AU labels: independent AUs except the AU2/AU3 pair."""
    labels = (rng.random((n, N_AUS)) < p_active).astype(np.float32)
    both, only = p_active * p_correlated, p_active * (1 - p_correlated)
    pair = rng.choice(4, size=n, p=[1 - both - 2 * only, only, only, both])
    labels[:, 1] = (pair == 1) | (pair == 3)
    labels[:, 2] = (pair == 2) | (pair == 3)
    return labels


def one_au_labels(per_au: int) -> np.ndarray:
    """(9 * per_au, 9) labels with exactly one AU active, ``per_au`` images for each AU."""
    return np.repeat(np.eye(N_AUS, dtype=np.float32), per_au, axis=0)


def render(labels: np.ndarray, digits: np.ndarray, digit_labels: np.ndarray, pool: np.ndarray,
           difficulty: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw grids for ``labels``; returns uint8 images (N, 96, 96, 1) and the digit image ids used."""
    n = len(labels)
    canvas = np.zeros((n, SIZE, SIZE), dtype=np.float32)
    used = np.full((n, N_AUS), -1, dtype=np.int64)
    for k in range(N_AUS):
        rows = np.flatnonzero(labels[:, k] > 0.5)
        candidates = pool[digit_labels[pool] == k + 1]
        chosen = rng.choice(candidates, size=len(rows))
        used[rows, k] = chosen
        r, c = divmod(k, GRID)
        canvas[rows, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = digits[chosen]
    mean, std = NOISE[difficulty]
    if std > 0:
        for start in range(0, n, 4096):  # chunks keep the float noise buffer small
            block = canvas[start:start + 4096]
            block += mean + std * rng.standard_normal(size=block.shape, dtype=np.float32)
    images = np.rint(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)[..., None]
    return images, used


def _frame(labels: np.ndarray, used: np.ndarray, subject: str, origin: str, hide_labels: bool) -> pd.DataFrame:
    frame = pd.DataFrame(labels, columns=AU_COLUMNS)
    if hide_labels:
        frame = frame.add_prefix("true_")
        for column in AU_COLUMNS:
            frame[column] = np.nan
    frame.insert(0, "subject", subject)
    frame.insert(1, "origin", origin)
    frame["digit_ids"] = [",".join(map(str, row[row >= 0])) for row in used]
    return frame


def build_toy(config: ToyDatasetConfig, draw_seed: int | None = None) -> dict[str, ImageSet]:
    """The labelled (with a train/val ``split`` column), unlabelled and test sets of a config.

    ``draw_seed`` (default: the config's seed) seeds the labels, digits and noise drawn; which
    digit images may appear in training and which in test always follows the config's seed.
    """
    digits, digit_labels = load_digits(config.digits, config.mnist_path)
    train_pool, test_pool = split_digit_pools(digit_labels, config.seed)
    seeds = np.random.SeedSequence(config.seed if draw_seed is None else draw_seed).spawn(4)
    meta = {"dataset": "toy", "difficulty": config.difficulty, "pixel_scale": "[0,1], clipped, x255 as uint8",
            "label_type": "au_presence"}
    sets: dict[str, ImageSet] = {}
    plan = [("labelled", config.labelled, train_pool, False), ("unlabelled", config.unlabelled, train_pool, True)]
    for (name, n, pool, hidden), seed in zip(plan, seeds):
        rng = np.random.default_rng(seed)
        labels = sample_correlated_labels(n, config.p_active, config.p_correlated, rng)
        images, used = render(labels, digits, digit_labels, pool, config.difficulty, rng)
        sets[name] = ImageSet(images, _frame(labels, used, "toy-train-digits", name, hidden), list(AU_COLUMNS), meta)
    rng = np.random.default_rng(seeds[2])
    labels = one_au_labels(config.test_per_au)
    images, used = render(labels, digits, digit_labels, test_pool, config.difficulty, rng)
    sets["test"] = ImageSet(images, _frame(labels, used, "toy-test-digits", "test", False), list(AU_COLUMNS), meta)
    split_rng = np.random.default_rng(seeds[3])
    is_val = split_rng.permutation(config.labelled) < max(1, int(round(config.val_fraction * config.labelled)))
    sets["labelled"].frame["split"] = np.where(is_val, "val", "train")
    return sets


def independent_config(config: ToyDatasetConfig, n: int) -> ToyDatasetConfig:
    """``n`` labelled images like ``config``'s but with AU2 and AU3 independent (P(AU3 | AU2) =
    ``p_active``, the same marginals), and no pool; built with ``build_toy(.., draw_seed)`` they come
    from the same training digits as ``config``'s images, drawn with their own seed.

    The generated images' judge trains on these: a classifier trained on the correlated data learns
    to see AU3 wherever AU2 is (it passes about 40% of real AU2-only images), so it could not tell
    an image that shows AU2 alone from one that does not.
    """
    return config.model_copy(update={"labelled": n, "unlabelled": 0, "p_correlated": config.p_active,
                                     "test_per_au": 1})
