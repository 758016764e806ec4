"""Make AU-isolated images with a trained generator, and check them with an oracle classifier.

Sources are neutral faces (no AU active), so an image asked to show 'AU k alone' should differ
from its source only by AU k: the generated set has every AU once per source, and no AU pair
occurs together, which is what breaks the training data's correlations.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.utils import save_image

from ausynth.configs.generator import GeneratorConfig
from ausynth.tasks.checkpoint import TrainedGenerator
from ausynth.tasks.errors import DataError
from ausynth.tasks.gan_training import translate
from ausynth.tasks.generator_kinds import AU_LABEL_TYPES, generator_kind
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.train_classifier import predict_proba, scale, to_tensor

log = logging.getLogger("ausynth")

BATCH = 64  # source images per generator call (each becomes K images)


def total_images(cfg: GeneratorConfig, default_total: int, n_labels: int) -> int:
    """How many images to make: ``images_per_au`` per label, else the comparison's common size."""
    return cfg.images_per_au * n_labels if cfg.images_per_au else default_total


def neutral_sources(pool: ImageSet, threshold: float, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of neutral rows and their source labels (labels, or predicted scores where unlabelled).

    A labelled row is neutral when all its AUs are zero; an unlabelled row (any NaN) when every
    score of ``scores`` (a classifier's, one row per pool image) is below ``threshold``.
    """
    labels = pool.labels
    unlabelled = np.isnan(labels).any(axis=1)
    if unlabelled.any() and scores is None:
        raise ValueError(f"{int(unlabelled.sum())} pool images have no labels: pass the teacher's scores for them")
    source_labels = np.where(unlabelled[:, None], scores if scores is not None else 0.0, labels)
    peak = source_labels.max(axis=1)
    neutral = np.where(unlabelled, peak < threshold, np.nan_to_num(labels).max(axis=1) == 0)
    if not neutral.any():
        raise DataError(_no_neutral_message(peak, unlabelled, threshold))
    index = np.flatnonzero(neutral)
    return index, source_labels[index].astype(np.float32)


def neutral_emotion_sources(pool: ImageSet, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows labelled neutral, or (unlabelled) whose most likely class is neutral: StarGAN's emotion
    analogue of 'no AU active'; each then becomes one image per emotion domain."""
    neutral = [i for i, name in enumerate(pool.label_columns) if name.lower().endswith("neutral")]
    if not neutral:
        raise DataError(f"no neutral emotion column among {pool.label_columns}: emotion generation starts from "
                         "neutral faces, so the labels need a 'neutral' class")
    labels = pool.labels
    unlabelled = np.isnan(labels).any(axis=1)
    source_labels = np.where(unlabelled[:, None], scores if scores is not None else np.nan, labels)
    known = ~np.isnan(source_labels).any(axis=1)
    is_neutral = known & (np.nan_to_num(source_labels).argmax(axis=1) == neutral[0])
    if not is_neutral.any():
        raise DataError("no neutral face: no labelled image is 'neutral' and no unlabelled one is predicted neutral")
    index = np.flatnonzero(is_neutral)
    one_hot = np.eye(len(pool.label_columns), dtype=np.float32)[neutral[0]]
    return index, np.repeat(one_hot[None], len(index), axis=0)


def _no_neutral_message(peak: np.ndarray, unlabelled: np.ndarray, threshold: float) -> str:
    """Tell the user what threshold would have found sources, from the scores actually seen."""
    message = (f"no neutral source image: none of the {int((~unlabelled).sum())} labelled images has all AUs at "
               f"zero")
    if unlabelled.any():
        scored = peak[unlabelled]
        quantiles = np.quantile(scored, [0.01, 0.1, 0.5])
        message += (f", and none of the {len(scored)} unlabelled images has every predicted AU score below "
                    f"generator.neutral_threshold={threshold} (their highest AU scores: min {scored.min():.3f}, "
                    f"1% {quantiles[0]:.3f}, 10% {quantiles[1]:.3f}, median {quantiles[2]:.3f}, max "
                    f"{scored.max():.3f}). Set generator.neutral_threshold just above the share you accept, e.g. "
                    f"{min(quantiles[1] + 0.01, 0.99):.2f} to use the 10% most neutral images")
    return message + "."


@torch.no_grad()
def generate_isolated(generator: TrainedGenerator, pool: ImageSet, cfg: GeneratorConfig, count: int,
                      device: torch.device, scores: np.ndarray | None = None, seed: int = 0) -> ImageSet:
    """``count`` images, each showing one AU alone, made from neutral sources.

    ``scores`` are the teacher's predictions for the pool's unlabelled rows (NaN on labelled rows):
    they decide which unlabelled images count as neutral.

    The AU asked for is at ``cfg.intensity`` for the EM (graded AUs); StarGAN's AU domains are
    binary, so it asks for presence (1).

    Every source gives one image per label; sources are drawn at random (repeating only when
    there are fewer neutral images than needed, with a warning). Rows keep the source's subject
    and its pool row (``source_index``) and name the label asked for (``target``).
    """
    arch = generator.architecture
    if list(arch.label_columns) != pool.label_columns or arch.kind != cfg.kind:
        raise ValueError(f"the generator is a {arch.kind} for labels {list(arch.label_columns)}; asked for a "
                         f"{cfg.kind} for the pool's labels {pool.label_columns}")
    if arch.label_type == "emotion":
        candidates, candidate_labels = neutral_emotion_sources(pool, scores)
    elif arch.label_type in AU_LABEL_TYPES:
        candidates, candidate_labels = neutral_sources(pool, cfg.neutral_threshold, scores)
    else:
        raise ValueError(f"isolated generation needs AU or emotion labels, the generator was trained on "
                         f"{arch.label_type!r}")
    k = len(pool.label_columns)
    n_sources = math.ceil(count / k)
    if n_sources > len(candidates):
        log.warning("only %d neutral source images for %d needed: sources repeat, so generated images repeat",
                    len(candidates), n_sources)
    rng = np.random.default_rng(seed)
    pick = np.resize(rng.permutation(len(candidates)), n_sources)
    sources, source_labels = candidates[pick], torch.from_numpy(candidate_labels[pick]).to(device)
    objective = generator_kind(arch.kind).objective(cfg, arch.label_type)
    targets = objective.single_targets(k, cfg.intensity, device)
    chunks = []
    for start in range(0, n_sources, BATCH):
        x = scale(to_tensor(pool.images[sources[start:start + BATCH]], device))
        src = source_labels[start:start + BATCH]
        out = translate(generator.model, objective, x.repeat_interleave(k, 0), src.repeat_interleave(k, 0),
                        targets.repeat(len(x), 1))
        chunks.append(((out.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
    images = torch.cat(chunks).numpy()[:count]
    frame = _manifest(pool, sources, targets.cpu().numpy())[:count].reset_index(drop=True)
    meta = {**pool.meta, "generator_kind": arch.kind, "generator_checkpoint": str(generator.checkpoint),
            "generator_step": generator.step, "target_value": float(targets.max())}
    log.info("generated %d AU-isolated images from %d neutral sources (%d available)", len(images), n_sources,
             len(candidates))
    return ImageSet(images, frame, list(pool.label_columns), meta)


def _manifest(pool: ImageSet, sources: np.ndarray, targets: np.ndarray) -> pd.DataFrame:
    """Each source once per label, labelled with the target asked for."""
    k = len(pool.label_columns)
    frame = pd.DataFrame(np.tile(targets, (len(sources), 1)), columns=pool.label_columns)
    frame.insert(0, "subject", pool.frame["subject"].to_numpy()[sources].repeat(k))
    frame.insert(1, "origin", "generated")
    frame["source_index"] = sources.repeat(k)
    frame["target"] = np.tile(np.asarray(pool.label_columns), len(sources))
    return frame


def _target_index(generated: ImageSet) -> np.ndarray:
    return generated.frame["target"].map({name: i for i, name in enumerate(generated.label_columns)}).to_numpy()


def quality_check(generated: ImageSet, oracle: nn.Module, device: torch.device,
                  threshold: float = 0.5) -> tuple[pd.DataFrame, np.ndarray]:
    """Per label: the share of its images where the oracle sees it, sees any other label, and sees it alone.

    An image passes when the oracle's score is >= ``threshold`` for the asked-for label and
    below it for every other one. Returns the per-label table and the per-image pass mask.
    """
    shown = predict_proba(oracle, generated.images, device) >= threshold
    columns = generated.label_columns
    target = _target_index(generated)
    rows = np.arange(len(target))
    target_shown = shown[rows, target]
    others = shown.copy()
    others[rows, target] = False
    other_shown = others.any(axis=1)
    passed = target_shown & ~other_shown
    table = pd.DataFrame({"share_target_shown": target_shown, "share_other_shown": other_shown, "pass_rate": passed})
    table = table.groupby(target).mean().reindex(range(len(columns)))
    table.index = pd.Index(columns, name="target")
    table["images"] = np.bincount(target, minlength=len(columns))
    return table, passed


def keep_passing(generated: ImageSet, passed: np.ndarray) -> ImageSet:
    """Only the images that passed the quality check (``generator.drop_failed``)."""
    log.info("quality check: dropping %d of %d generated images", int((~passed).sum()), len(passed))
    return generated.subset(np.flatnonzero(passed))


def identity_distance(generated: ImageSet, pool: ImageSet, grid: int, cell: int) -> np.ndarray:
    """Per generated image: mean |pixel difference| in [0, 1] to its source, outside the target's cell.

    For the toy grid (``grid`` x ``grid`` cells of ``cell`` pixels, label k in cell k row-major)
    only the target's cell should change, so anything else that moved is lost identity.
    """
    target, source_index = _target_index(generated), generated.frame["source_index"].to_numpy()
    distance = np.zeros(len(generated), dtype=np.float64)
    for k in np.unique(target):  # one label at a time: the same mask, and bounded memory
        rows = np.flatnonzero(target == k)
        diff = np.abs(generated.images[rows].astype(np.float32) - pool.images[source_index[rows]]) / 255.0
        outside = np.ones((grid * cell, grid * cell), dtype=bool)
        r, c = divmod(int(k), grid)
        outside[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = False
        distance[rows] = diff[:, outside].mean(axis=(1, 2))
    return distance


def example_grid(generated: ImageSet, pool: ImageSet, path: Path, n_sources: int = 8) -> Path:
    """A PNG with one row per source: the source, then its image for each label (blank if dropped)."""
    frame, k = generated.frame, len(generated.label_columns)
    chosen = pd.unique(frame["source_index"])[:n_sources]
    if len(chosen) == 0:
        raise ValueError("no generated images to show")
    tiles = np.zeros((len(chosen), k + 1, *generated.image_shape), dtype=np.uint8)
    tiles[:, 0] = pool.images[chosen]
    where = {(s, t): i for i, (s, t) in enumerate(zip(frame["source_index"], _target_index(generated)))}
    for row, source in enumerate(chosen):
        for label in range(k):
            if (source, label) in where:
                tiles[row, label + 1] = generated.images[where[source, label]]
    batch = torch.from_numpy(tiles.reshape(-1, *generated.image_shape)).permute(0, 3, 1, 2).float() / 255.0
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(batch, path, nrow=k + 1, padding=2, pad_value=1.0)
    return path
