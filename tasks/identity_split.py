"""Stage 3 on real faces: train / val / test with no person in two of them.

A classifier that has seen a person's face in training scores that person too well at test, so
splits are drawn over subjects, not images (sklearn's GroupShuffleSplit: ``test`` and ``val`` are
shares of the subjects). Subjects differ in how often they show each label, so a random draw can
leave a split with few smiles; of ``draws`` random draws the one whose per-split label means (AU
prevalence, emotion shares, mean intensity or valence/arousal) are closest to the overall means
is kept, as the source thesis did for Aff-Wild.

Only labelled rows are split. Unlabelled rows of val or test subjects are dropped from the
unlabelled pool: pseudo-labelling and generator training on them would show those faces to the
models before evaluation.

Rows without a subject cannot be placed safely; they are an error unless the config sets
``allow_missing_subject``, which makes each such image its own subject (``image:<path>``): right
for sets like FER2013 where no identity is given and each person is assumed to appear once.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from ausynth.configs.faces import SplitConfig
from ausynth.tasks.errors import DataError
from ausynth.tasks.imageset import ImageSet

log = logging.getLogger("ausynth")

SPLITS = ("train", "val", "test")
MIN_SUBJECTS = 3


class LeakageError(RuntimeError):
    """A subject in two splits: evaluation would measure memorised faces. A bug, not a user's error."""


class MissingSubjectError(DataError):
    """Labelled rows without a subject, and no fallback asked for."""


class TooFewSubjectsError(DataError):
    """Fewer labelled subjects than splits; ``face_dataset`` adds why (no face crops, ...) where it knows."""


def subjects(frame: pd.DataFrame, allow_missing: bool) -> pd.Series:
    """Each row's subject; rows without one are an error unless each may be its own subject."""
    text = frame["subject"].astype(object)
    missing = text.isna() | (text.astype(str).str.strip() == "")
    if missing.any() and not allow_missing:
        examples = ", ".join(frame.loc[missing, "path"].astype(str).head(3))
        raise MissingSubjectError(
            f"{int(missing.sum())} of {len(frame)} labelled images have no subject (e.g. {examples}). "
            "An identity split must know who each face is: add a 'subject' column to the manifest or set "
            "source.subject_regex; or, only if no person appears in two images, set "
            "split.allow_missing_subject: true to make every such image its own subject."
        )
    return text.where(~missing, "image:" + frame["path"].astype(str)).astype(str)


def draw(groups: np.ndarray, config: SplitConfig, seed: int) -> np.ndarray:
    """One grouped split: an array of 'train' / 'val' / 'test' per row."""
    rows = np.arange(len(groups))
    outer = GroupShuffleSplit(n_splits=1, test_size=config.test, random_state=seed)
    rest, test = next(outer.split(rows, groups=groups))
    inner = GroupShuffleSplit(n_splits=1, test_size=config.val / (1 - config.test), random_state=seed)
    train, val = next(inner.split(rest, groups=groups[rest]))
    assignment = np.full(len(groups), "train", dtype=object)
    assignment[test] = "test"
    assignment[rest[val]] = "val"
    return assignment


def label_means(labels: pd.DataFrame, assignment: np.ndarray) -> pd.DataFrame:
    """Per-split mean of each label column (prevalence for 0/1 and one-hot labels)."""
    return labels.groupby(assignment).mean().reindex(list(SPLITS))


def imbalance(labels: pd.DataFrame, assignment: np.ndarray) -> float:
    """Summed absolute gap between each split's label means and the overall means.

    A split where a label has no value at all counts as a gap of 1 for that label.
    """
    gaps = (label_means(labels, assignment) - labels.mean()).abs().fillna(1.0)
    return float(gaps.to_numpy().sum())


def check_no_leakage(groups: pd.Series | np.ndarray, assignment: np.ndarray) -> None:
    """Fail loudly when any subject appears in more than one split."""
    table = pd.crosstab(np.asarray(groups), np.asarray(assignment))
    shared = table[(table > 0).sum(axis=1) > 1]
    if len(shared):
        details = "; ".join(f"{s}: {', '.join(c for c in shared.columns if shared.at[s, c] > 0)}"
                            for s in shared.index[:5])
        raise LeakageError(f"{len(shared)} subject(s) appear in more than one split ({details})")


def split_statistics(frame: pd.DataFrame, label_columns: list[str], assignment: np.ndarray) -> pd.DataFrame:
    """Per split and overall: images, subjects, labelled images and each label's mean."""
    parts = {name: frame[assignment == name] for name in SPLITS} | {"all": frame}
    rows = {}
    for name, part in parts.items():
        rows[name] = {"images": len(part), "subjects": part["subject"].nunique(),
                      **part[label_columns].mean().to_dict()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("split")


def best_split(groups: np.ndarray, labels: pd.DataFrame, config: SplitConfig) -> tuple[np.ndarray, int, float]:
    """Of ``config.draws`` grouped draws, the one with the most even label means; its index and score."""
    found = np.unique(groups)
    if len(found) < MIN_SUBJECTS:
        why = (": no labelled image reached the split" if not len(found) else
               f" ({', '.join(map(str, found))}): add labelled images of more people, or check the subject column "
               "or source.subject_regex if these are not the people")
        raise TooFewSubjectsError(f"an identity split into train/val/test needs at least {MIN_SUBJECTS} subjects, "
                                  f"the labelled data has {len(found)}{why}")
    seeds = np.random.SeedSequence(config.seed).generate_state(config.draws)
    best: tuple[np.ndarray, int, float] | None = None
    for index, seed in enumerate(seeds):
        assignment = draw(groups, config, int(seed))
        score = imbalance(labels, assignment)
        if best is None or score < best[2]:
            best = (assignment, index, score)
    return best  # type: ignore[return-value]


def split_by_identity(crops: ImageSet, config: SplitConfig) -> tuple[dict[str, ImageSet], pd.DataFrame]:
    """The toy contract from face crops: 'labelled' (``split`` train/val), 'unlabelled' and 'test',
    with the per-split label statistics."""
    is_labelled = (crops.frame["origin"] == "labelled").to_numpy()
    labelled = crops.subset(np.flatnonzero(is_labelled))
    groups = subjects(labelled.frame, config.allow_missing_subject)
    labelled.frame["subject"] = groups.to_numpy()
    assignment, index, score = best_split(groups.to_numpy(), labelled.frame[labelled.label_columns], config)
    check_no_leakage(groups, assignment)
    stats = split_statistics(labelled.frame, labelled.label_columns, assignment)
    held_out = set(groups[assignment != "train"])
    pool = crops.subset(np.flatnonzero(~is_labelled & ~crops.frame["subject"].isin(held_out).to_numpy()))
    dropped = int((~is_labelled).sum()) - len(pool)
    log.info("identity split: draw %d of %d (imbalance %.4f); %s; %d unlabelled images of val/test subjects "
             "left out of the pool", index + 1, config.draws, score, stats[["images", "subjects"]].to_dict("index"),
             dropped)
    meta = {"split": {**config.model_dump(mode="json"), "chosen_draw": index, "imbalance": score,
                      "unlabelled_dropped": dropped}}
    train_val = labelled.subset(np.flatnonzero(assignment != "test"))
    train_val.frame["split"] = assignment[assignment != "test"]
    test = labelled.subset(np.flatnonzero(assignment == "test"))
    test.frame["origin"] = "test"
    sets = {"labelled": train_val, "unlabelled": pool, "test": test}
    for imageset in sets.values():
        imageset.meta.update(meta)
    return sets, stats
