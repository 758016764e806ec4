"""Make single-label images with a trained generator, and check them with an oracle classifier.

Sources are neutral faces (no AU active), taken most neutral first, so an image asked to show
'AU k alone' should differ from its source only by AU k: the generated set has every AU once
per source, and no AU pair occurs together, which is what breaks the training data's
correlations. The oracle (a classifier trained apart from every one under evaluation) checks
each image, and is itself calibrated on real single-label images: a generated pass rate means
little unless the same oracle passes real images at a known rate.

A kind that draws from noise (cgan) needs no neutral face: its 'sources' are latent codes, code i
being the i-th draw of a fixed noise sequence, each asked once for every label; the oracle check,
the exact count and the rounds of verified generation apply unchanged.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from ausynth.configs.generator import GeneratorConfig
from ausynth.tasks.checkpoint import TrainedGenerator
from ausynth.tasks.device import autocast, mixed_precision
from ausynth.tasks.diversity import diversity
from ausynth.tasks.errors import DataError
from ausynth.tasks.gan_training import translate
from ausynth.tasks.generator_kinds import ISOLATED_LABEL_TYPES, generator_kind
from ausynth.tasks.imageset import ImageSet, concat
from ausynth.tasks.train_classifier import predict_proba, scale, to_tensor

log = logging.getLogger("ausynth")

# Generated images per generator call, at most: on a CPU a call of 64 keeps its activations in cache,
# 2.5x faster than the 576 of 64 sources x 9 AUs (the EM at 96x96, 1 thread, float32; 4.3x in bfloat16).
IMAGES_PER_CALL = 64
PROGRESS_LINES = 10  # log lines while a large set is generated (90K images take minutes on a CPU)
LATENT_SEED = 4099  # the noise sequence a kind drawing from noise takes its latent codes from


def total_images(cfg: GeneratorConfig, default_total: int, n_labels: int) -> int:
    """How many images to make: ``images_per_au`` per label, else the comparison's common size."""
    return cfg.images_per_au * n_labels if cfg.images_per_au else default_total


def quotas(count: int, n_labels: int) -> np.ndarray:
    """``count`` images spread as evenly as possible over the labels (the first labels get the remainder)."""
    return count // n_labels + (np.arange(n_labels) < count % n_labels)


# ----------------------------------------------------------------------------- neutral sources

def neutral_sources(pool: ImageSet, threshold: float, scores: np.ndarray | None,
                    where: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Neutral rows, most neutral first, and their source labels (labels, or predicted scores where unlabelled).

    A labelled row is neutral when all its AUs are zero; an unlabelled row (any NaN) when every
    score of ``scores`` (the teacher's, one row per pool image) is below ``threshold``. Rows are
    ordered by their highest AU activity (labelled neutral rows count 0), so the sources used are
    the ones least likely to show an AU already. ``where``: 'labelled', 'pool' or 'auto' (both).
    """
    labels = pool.labels
    unlabelled = np.isnan(labels).any(axis=1)
    if unlabelled.any() and scores is None:
        raise ValueError(f"{int(unlabelled.sum())} pool images have no labels: pass the teacher's scores for them")
    source_labels = np.where(unlabelled[:, None], scores if scores is not None else 0.0, labels)
    peak = source_labels.max(axis=1)
    neutral = np.where(unlabelled, peak < threshold, np.nan_to_num(labels).max(axis=1) == 0)
    neutral &= {"auto": True, "labelled": ~unlabelled, "pool": unlabelled}[where]
    if not neutral.any():
        raise DataError(_no_neutral_message(peak, unlabelled, threshold, where))
    index = np.flatnonzero(neutral)
    index = index[np.argsort(np.where(unlabelled[index], peak[index], 0.0), kind="stable")]
    return index, source_labels[index].astype(np.float32)


def _neutral_class(pool: ImageSet) -> int:
    """The column of the 'neutral' emotion class."""
    neutral = [i for i, name in enumerate(pool.label_columns) if name.lower().endswith("neutral")]
    if not neutral:
        raise DataError(f"no neutral emotion column among {pool.label_columns}: emotion generation starts from "
                        "neutral faces, so the labels need a 'neutral' class")
    return neutral[0]


def neutral_emotion_sources(pool: ImageSet, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows labelled neutral, or (unlabelled) whose most likely class is neutral, surest first: StarGAN's
    emotion analogue of 'no AU active'; each then becomes one image per emotion domain."""
    neutral = _neutral_class(pool)
    labels = pool.labels
    unlabelled = np.isnan(labels).any(axis=1)
    source_labels = np.where(unlabelled[:, None], scores if scores is not None else np.nan, labels)
    known = ~np.isnan(source_labels).any(axis=1)
    is_neutral = known & (np.nan_to_num(source_labels).argmax(axis=1) == neutral)
    if not is_neutral.any():
        raise DataError("no neutral face: no labelled image is 'neutral' and no unlabelled one is predicted neutral")
    index = np.flatnonzero(is_neutral)
    index = index[np.argsort(-source_labels[index, neutral], kind="stable")]
    one_hot = np.eye(len(pool.label_columns), dtype=np.float32)[neutral]
    return index, np.repeat(one_hot[None], len(index), axis=0)


def neutral_set_sources(pool: ImageSet, scores: np.ndarray, label_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Every image of a labelled neutral set (``dataset.neutral``), with a neutral source label (no AU; the
    neutral class), whatever the teacher's ``scores`` say: the label is what makes them neutral. The
    scores only order them, the ones the teacher finds most neutral first, as for the other sources."""
    n_labels = len(pool.label_columns)
    if label_type == "emotion":
        neutral = _neutral_class(pool)
        index = np.argsort(-scores[:, neutral], kind="stable")
        labels = np.eye(n_labels, dtype=np.float32)[neutral]
    else:
        index = np.argsort(scores.max(axis=1), kind="stable")
        labels = np.zeros(n_labels, np.float32)
    return index, np.repeat(labels[None], len(index), axis=0)


def _no_neutral_message(peak: np.ndarray, unlabelled: np.ndarray, threshold: float, where: str) -> str:
    """Tell the user what threshold would have found sources, from the scores actually seen."""
    message = (f"no neutral source image (generator.neutral_source: {where}): none of the "
               f"{int((~unlabelled).sum())} labelled images has all AUs at zero")
    if unlabelled.any():
        scored = peak[unlabelled]
        quantiles = np.quantile(scored, [0.01, 0.1, 0.5])
        message += (f", and none of the {len(scored)} unlabelled images has every predicted AU score below "
                    f"generator.neutral_threshold={threshold} (their highest AU scores: min {scored.min():.3f}, "
                    f"1% {quantiles[0]:.3f}, 10% {quantiles[1]:.3f}, median {quantiles[2]:.3f}, max "
                    f"{scored.max():.3f}). Set generator.neutral_threshold just above the share you accept, e.g. "
                    f"{min(quantiles[1] + 0.01, 0.99):.2f} to use the 10% most neutral images")
    return message + "."


def candidate_sources(generator: TrainedGenerator, pool: ImageSet, cfg: GeneratorConfig,
                      scores: np.ndarray | None, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The neutral sources the generator's label type calls for, most neutral first; for a kind that draws
    from noise, latent codes enough for ``count`` images in each of ``cfg.max_rounds`` rounds."""
    arch = generator.architecture
    if list(arch.label_columns) != pool.label_columns or arch.kind != cfg.kind:
        raise ValueError(f"the generator is a {arch.kind} for labels {list(arch.label_columns)}; asked for a "
                         f"{cfg.kind} for the pool's labels {pool.label_columns}")
    if arch.label_type not in ISOLATED_LABEL_TYPES:
        raise ValueError(f"isolated generation needs AU or emotion labels, the generator was trained on "
                         f"{arch.label_type!r}")
    if not generator_kind(arch.kind).needs_source:
        codes = math.ceil(count / len(pool.label_columns)) * cfg.max_rounds
        return np.arange(codes), np.zeros((codes, len(pool.label_columns)), np.float32)
    if cfg.neutral_source == "neutral_set":  # pool is the neutral set, scores the teacher's for it
        return neutral_set_sources(pool, scores, arch.label_type)
    if arch.label_type == "emotion":
        return neutral_emotion_sources(pool, scores)
    return neutral_sources(pool, cfg.neutral_threshold, scores, cfg.neutral_source)


def latent_codes(noise_dim: int, codes: np.ndarray, device: torch.device) -> torch.Tensor:
    """Code i is the i-th draw of a fixed noise sequence: the same in every run and round."""
    sequence = torch.Generator().manual_seed(LATENT_SEED)
    return torch.randn(int(codes.max()) + 1, noise_dim, generator=sequence)[torch.from_numpy(codes)].to(device)


# ----------------------------------------------------------------------------- generation

@torch.no_grad()
def translate_sources(generator: TrainedGenerator, pool: ImageSet, cfg: GeneratorConfig, sources: np.ndarray,
                      source_labels: np.ndarray, device: torch.device) -> ImageSet:
    """Each source once per label, asked to show that label alone.

    The label asked for is at ``cfg.intensity`` for the EM (graded AUs); StarGAN's domains are
    binary, so it asks for presence (1). Rows keep the source's subject and its pool row
    (``source_index``) and name the label asked for (``target``). For a kind that draws from noise
    the sources are latent codes (``latent_codes``) and the subject names the kind. The generator runs
    in the precision that ``cfg.amp`` trains it in (``device.mixed_precision``), on at most
    ``IMAGES_PER_CALL`` images at a time.
    """
    arch = generator.architecture
    k = len(pool.label_columns)
    objective = generator_kind(arch.kind).objective(cfg, arch.label_type)
    targets = objective.single_targets(k, cfg.intensity, device)
    labels = torch.from_numpy(source_labels).to(device)
    latents = latent_codes(objective.noise_dim, sources, device) if objective.noise_dim else None
    precision = mixed_precision(device, cfg.amp)
    per_call = max(1, IMAGES_PER_CALL // k)  # sources per call
    chunks, starts = [], range(0, len(sources), per_call)
    every = max(1, len(starts) // PROGRESS_LINES)
    for i, start in enumerate(starts):
        if i and i % every == 0:
            log.info("generating: %d of %d images", start * k, len(sources) * k)
        chunk = slice(start, start + per_call)
        x = latents[chunk] if latents is not None else scale(to_tensor(pool.images[sources[chunk]], device))
        src = labels[chunk]
        with autocast(device, precision):
            out = translate(generator.model, objective, x.repeat_interleave(k, 0), src.repeat_interleave(k, 0),
                            targets.repeat(len(x), 1))
        chunks.append(((out.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
    meta = {**pool.meta, "generator_kind": arch.kind, "generator_checkpoint": str(generator.checkpoint),
            "generator_step": generator.step, "target_value": float(targets.max())}
    subjects = np.full(len(sources), arch.kind) if latents is not None else pool.frame["subject"].to_numpy()[sources]
    return ImageSet(torch.cat(chunks).numpy(), _manifest(pool, sources, subjects, targets.cpu().numpy()),
                    list(pool.label_columns), meta)


def generate_isolated(generator: TrainedGenerator, pool: ImageSet, cfg: GeneratorConfig, count: int,
                      device: torch.device, scores: np.ndarray | None = None) -> ImageSet:
    """``count`` images, each showing one label alone, from the ``ceil(count / K)`` most neutral sources.

    ``scores`` are the teacher's predictions for the pool's unlabelled rows (NaN on labelled rows):
    they decide which unlabelled images count as neutral. Sources repeat (with a warning) only when
    there are fewer neutral images than needed.
    """
    candidates, candidate_labels = candidate_sources(generator, pool, cfg, scores, count)
    n_sources = math.ceil(count / len(pool.label_columns))
    if n_sources > len(candidates):
        log.warning("only %d neutral source images for %d needed: sources repeat, so generated images repeat",
                    len(candidates), n_sources)
    pick = np.resize(np.arange(len(candidates)), n_sources)
    made = translate_sources(generator, pool, cfg, candidates[pick], candidate_labels[pick], device)
    log.info("generated %d single-label images from %d %s (%d available)", count, n_sources,
             _source_word(generator), len(candidates))
    return made.subset(np.arange(count))


def generate_verified(generator: TrainedGenerator, pool: ImageSet, cfg: GeneratorConfig, count: int,
                      device: torch.device, scores: np.ndarray | None, oracle: nn.Module,
                      threshold: float) -> tuple[ImageSet, ImageSet]:
    """Exactly ``count`` images that pass the oracle, the same number per label; and every image tried.

    Sources are taken most neutral first, ``ceil(count / K)`` per round, until every label has its
    quota of passing images or ``cfg.max_rounds`` rounds (or the neutral sources) are used up. A
    shortfall then fails, naming the counts; with ``cfg.on_shortfall: shift`` it goes to the labels with
    passing images to spare (only passing images, fewer labels; fails if fewer than ``count`` pass in all),
    with ``fill`` it is filled with the label's failing images (kept with ``passed`` False), each with a
    warning: never a silently smaller set.
    """
    candidates, candidate_labels = candidate_sources(generator, pool, cfg, scores, count)
    k = len(pool.label_columns)
    need, per_round = quotas(count, k), math.ceil(count / k)
    tried: list[ImageSet] = []
    for start in range(0, min(len(candidates), per_round * cfg.max_rounds), per_round):
        pick = slice(start, start + per_round)
        made = translate_sources(generator, pool, cfg, candidates[pick], candidate_labels[pick], device)
        made.frame["passed"] = oracle_verdict(made, oracle, device, threshold)
        tried.append(made)
        need = np.maximum(need - np.bincount(_target_index(made)[made.frame["passed"].to_numpy()], minlength=k), 0)
        if not need.any():
            break
    every = concat(tried)
    log.info("generated %d single-label images from %d %s to find %d that pass the oracle",
             len(every), len(every) // k, _source_word(generator), count)
    return _take_quotas(every, quotas(count, k), cfg.on_shortfall), every


def shifted_quotas(found: np.ndarray, count: int) -> np.ndarray:
    """``count`` split as evenly as ``found`` (passing images per label) allows: labels short of an even
    share keep all they have, the rest go to the labels with images to spare (water-filling)."""
    quota, left = np.zeros_like(found), count
    for i, k in enumerate(np.argsort(found, kind="stable")):
        quota[k] = min(found[k], -(-left // (len(found) - i)))
        left -= quota[k]
    return quota


def _take_quotas(every: ImageSet, quota: np.ndarray, on_shortfall: str) -> ImageSet:
    """Per label, its quota of passing images in the order made; a shortfall fails, is shifted to the labels
    with passing images to spare, or is filled with failing ones, as ``on_shortfall`` says."""
    target, passed = _target_index(every), every.frame["passed"].to_numpy()
    found = np.bincount(target[passed], minlength=len(quota))
    short = {every.label_columns[k]: int(quota[k] - found[k]) for k in range(len(quota)) if found[k] < quota[k]}
    if short and on_shortfall == "shift" and found.sum() >= quota.sum():
        quota = shifted_quotas(found, int(quota.sum()))
        log.warning("too few generated images pass the oracle for %s: their share goes to the other labels, "
                    "now %s", short, dict(zip(every.label_columns, quota.tolist())))
    elif short and on_shortfall in ("fail", "shift"):
        other = ("fill to add failing images" if on_shortfall == "shift" else
                 "shift to give a short label's share to the others, fill to add failing images")
        raise DataError(f"the generator could not make enough images that pass the oracle: short by {short} "
                        f"after {len(every)} tries ({int(found.sum())} passed in all). Train the generator longer, "
                        f"raise generator.max_rounds, ask for fewer images, set generator.on_shortfall: {other}, "
                        "or generator.drop_failed: false")
    elif short:
        log.warning("too few generated images pass the oracle: filling with failing ones %s", short)
    chosen = []
    for k, n in enumerate(quota):
        rows = np.flatnonzero(target == k)
        chosen.append(np.concatenate([rows[passed[rows]], rows[~passed[rows]]])[:n])
    return every.subset(np.sort(np.concatenate(chosen)))


def _source_word(generator: TrainedGenerator) -> str:
    return "neutral sources" if generator_kind(generator.architecture.kind).needs_source else "latent codes"


def _manifest(pool: ImageSet, sources: np.ndarray, subjects: np.ndarray, targets: np.ndarray) -> pd.DataFrame:
    """Each source once per label, labelled with the target asked for."""
    k = len(pool.label_columns)
    frame = pd.DataFrame(np.tile(targets, (len(sources), 1)), columns=pool.label_columns)
    frame.insert(0, "subject", subjects.repeat(k))
    frame.insert(1, "origin", "generated")
    frame["source_index"] = sources.repeat(k)
    frame["target"] = np.tile(np.asarray(pool.label_columns), len(sources))
    return frame


def _target_index(generated: ImageSet) -> np.ndarray:
    return generated.frame["target"].map({name: i for i, name in enumerate(generated.label_columns)}).to_numpy()


# ----------------------------------------------------------------------------- the oracle's check

def _shown(images: ImageSet, oracle: nn.Module, device: torch.device, threshold: float) -> np.ndarray:
    return predict_proba(oracle, images.images, device) >= threshold


def _verdicts(shown: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: is its target label shown, and is any other label shown."""
    rows = np.arange(len(target))
    others = shown.copy()
    others[rows, target] = False
    return shown[rows, target], others.any(axis=1)


def oracle_verdict(generated: ImageSet, oracle: nn.Module, device: torch.device, threshold: float) -> np.ndarray:
    """Per image: does the oracle see the label asked for, and no other (score >= ``threshold``)."""
    target_shown, other_shown = _verdicts(_shown(generated, oracle, device, threshold), _target_index(generated))
    return target_shown & ~other_shown


def quality_table(generated: ImageSet, oracle: nn.Module, device: torch.device, threshold: float,
                  real: ImageSet | None = None) -> pd.DataFrame:
    """Per label: the share of its images where the oracle sees it, sees another label, and sees it alone.

    With ``real`` images the oracle is calibrated: ``real_pass_rate`` is the same check on real
    images that show exactly that label (e.g. the toy test set), and ``relative_pass_rate`` the
    generated rate over it; 1 means the generated images convince the oracle as often as real ones.
    Where real faces rarely show one AU alone (CK+ peak frames), the closest reference is
    ``real_target_shown``, the oracle's recall on real images that show the label among others, and
    ``relative_target_shown`` the generated images' ``share_target_shown`` over it.
    ``diversity`` is the generated images' spread over that of the real images that show the label
    (``tasks/diversity.py``): near 0 is mode collapse.
    """
    columns = generated.label_columns
    target = _target_index(generated)
    target_shown, other_shown = _verdicts(_shown(generated, oracle, device, threshold), target)
    table = pd.DataFrame({"share_target_shown": target_shown, "share_other_shown": other_shown,
                          "pass_rate": target_shown & ~other_shown})
    table = table.groupby(target).mean().reindex(range(len(columns)))
    table.index = pd.Index(columns, name="target")
    table["images"] = np.bincount(target, minlength=len(columns))
    if real is not None:
        table = table.join(real_pass_rates(real, oracle, device, threshold))
        real_rate = table["real_pass_rate"].where(table["real_pass_rate"] > 0)
        table["relative_pass_rate"] = table["pass_rate"] / real_rate
        table["relative_target_shown"] = table["share_target_shown"] / table["real_target_shown"].where(
            table["real_target_shown"] > 0)
        shown = np.nan_to_num(real.labels, nan=0.0) >= 0.5
        table["diversity"] = [diversity(generated.images[target == k], real.images[shown[:, k]])
                              for k in range(len(columns))]
    return table


def sources_showing_a_label(generated: ImageSet, pool: ImageSet, oracle: nn.Module, device: torch.device,
                            threshold: float) -> float:
    """The share of the unedited sources on which the oracle already sees some label. Their images pass
    only if the edit removes it too, so a high share caps the pass rate whatever the generator learns."""
    sources = np.unique(generated.frame["source_index"].to_numpy())
    return float(_shown(pool.subset(sources), oracle, device, threshold).any(axis=1).mean())


def real_pass_rates(real: ImageSet, oracle: nn.Module, device: torch.device, threshold: float) -> pd.DataFrame:
    """Per label (NaN where no real image has it): the oracle's pass rate on real images whose labels show
    exactly that label, and its recall on every real image that shows it."""
    present = np.nan_to_num(real.labels, nan=0.0) >= 0.5
    shown = _shown(real, oracle, device, threshold)
    single = present.sum(axis=1) == 1
    others = (shown & ~present).any(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "real_pass_rate": (present & single[:, None] & shown & ~others[:, None]).sum(axis=0)
            / (present & single[:, None]).sum(axis=0),
            "real_images": (present & single[:, None]).sum(axis=0),
            "real_target_shown": (present & shown).sum(axis=0) / present.sum(axis=0),
            "real_shown_images": present.sum(axis=0)}, index=pd.Index(real.label_columns, name="target"))


# ----------------------------------------------------------------------------- pictures and distances

def example_grid(generated: ImageSet, pool: ImageSet | None, n_sources: int = 6) -> Figure:
    """One row per source: the source (none for latent codes: ``pool`` None), then its image for each label
    (blank where none was kept), with the label names over the columns and a red frame on images the
    oracle failed."""
    frame, names = generated.frame, generated.label_columns
    lead = [] if pool is None else ["source"]
    chosen = pd.unique(frame["source_index"])[:n_sources]
    if len(chosen) == 0:
        raise ValueError("no generated images to show")
    where = {(s, t): i for i, (s, t) in enumerate(zip(frame["source_index"], _target_index(generated)))}
    passed = frame["passed"].to_numpy() if "passed" in frame else np.ones(len(frame), dtype=bool)
    fig = Figure(figsize=(1.1 * (len(names) + len(lead)), 1.2 * len(chosen) + 0.4))
    axes = fig.subplots(len(chosen), len(names) + len(lead), squeeze=False)
    for row, source in enumerate(chosen):
        tiles = ([] if pool is None else [(pool.images[source], True)]) + [
            (generated.images[where[source, k]], passed[where[source, k]]) if (source, k) in where else (None, True)
            for k in range(len(names))]
        for col, (tile, ok) in enumerate(tiles):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if tile is not None:
                ax.imshow(tile.squeeze(-1) if tile.shape[-1] == 1 else tile, cmap="gray", vmin=0, vmax=255)
            for spine in ax.spines.values():
                spine.set_color("black" if ok else "red")
            if row == 0:
                ax.set_title([*lead, *names][col], fontsize="small")
    fig.suptitle("Generated single-label images (red frame: the oracle sees another label or not the target)",
                 fontsize="small")
    return fig
