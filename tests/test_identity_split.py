"""Identity split: no subject in two splits, the most even of several draws, loud failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ausynth.configs.faces import SplitConfig
from ausynth.tasks.errors import DataError
from ausynth.tasks.identity_split import (LeakageError, MissingSubjectError, TooFewSubjectsError, check_no_leakage,
                                          draw, imbalance, split_by_identity)
from ausynth.tasks.imageset import ImageSet


def _crops(n_subjects: int = 30, per_subject: int = 6, unlabelled_subjects: list[str] | None = None,
           seed: int = 0) -> ImageSet:
    """AU presence labels whose prevalence differs a lot between subjects."""
    rng = np.random.default_rng(seed)
    subject = np.repeat([f"s{i:02d}" for i in range(n_subjects)], per_subject)
    rate = np.repeat(rng.uniform(0.0, 0.8, size=(n_subjects, 3)), per_subject, axis=0)
    frame = pd.DataFrame((rng.random(rate.shape) < rate).astype(float), columns=["AU1", "AU6", "AU12"])
    frame.insert(0, "path", [f"/img/{i}.png" for i in range(len(frame))])
    frame.insert(1, "subject", subject)
    frame.insert(2, "origin", "labelled")
    if unlabelled_subjects:
        pool = pd.DataFrame({"path": [f"/pool/{s}.png" for s in unlabelled_subjects], "subject": unlabelled_subjects,
                             "origin": "unlabelled", "AU1": np.nan, "AU6": np.nan, "AU12": np.nan})
        frame = pd.concat([frame, pool], ignore_index=True)
    return ImageSet(np.zeros((len(frame), 4, 4, 1), dtype=np.uint8), frame, ["AU1", "AU6", "AU12"])


def test_no_subject_in_two_splits_and_the_toy_contract():
    sets, stats = split_by_identity(_crops(), SplitConfig(val=0.1, test=0.2, draws=10))
    assert set(sets) == {"labelled", "unlabelled", "test"}
    labelled, test = sets["labelled"].frame, sets["test"].frame
    assert set(labelled["split"]) == {"train", "val"} and "split" not in test.columns
    assert (test["origin"] == "test").all() and (labelled["origin"] == "labelled").all()
    train_s, val_s, test_s = (set(labelled.loc[labelled["split"] == "train", "subject"]),
                              set(labelled.loc[labelled["split"] == "val", "subject"]), set(test["subject"]))
    assert not (train_s & val_s or train_s & test_s or val_s & test_s)
    assert (len(test_s), len(val_s)) == (6, 3)  # shares of 30 subjects
    assert list(stats.index) == ["train", "val", "test", "all"]
    assert stats.loc["all", "images"] == 180 and stats.loc["all", "subjects"] == 30
    assert {"AU1", "AU6", "AU12"} <= set(stats.columns)
    assert sets["test"].meta["split"]["draws"] == 10


def test_the_kept_draw_is_the_most_even():
    crops = _crops()
    config = SplitConfig(draws=15, seed=3)
    sets, _ = split_by_identity(crops, config)
    kept = pd.concat([sets["labelled"].frame, sets["test"].frame.assign(split="test")])
    kept = kept.set_index("path").loc[crops.frame["path"]]
    chosen = imbalance(crops.frame[crops.label_columns], kept["split"].to_numpy())
    seeds = np.random.SeedSequence(config.seed).generate_state(config.draws)
    scores = [imbalance(crops.frame[crops.label_columns], draw(crops.frame["subject"].to_numpy(), config, int(s)))
              for s in seeds]
    assert chosen == pytest.approx(min(scores)) and chosen < np.mean(scores)


def test_leakage_check_fails_loudly():
    groups = np.array(["a", "a", "b", "c"])
    check_no_leakage(groups, np.array(["train", "train", "val", "test"]))
    with pytest.raises(LeakageError, match="a: test, train"):
        check_no_leakage(groups, np.array(["train", "test", "val", "test"]))


def test_missing_subject_is_an_error_unless_allowed():
    crops = _crops(n_subjects=10, per_subject=1)
    crops.frame.loc[[2, 5], "subject"] = None
    with pytest.raises(MissingSubjectError, match="2 of 10 labelled images have no subject.*allow_missing_subject"):
        split_by_identity(crops, SplitConfig())
    sets, stats = split_by_identity(crops, SplitConfig(allow_missing_subject=True))
    subjects = pd.concat([sets["labelled"].frame, sets["test"].frame])["subject"]
    assert {"image:/img/2.png", "image:/img/5.png"} <= set(subjects) and stats.loc["all", "subjects"] == 10


def test_unlabelled_faces_of_held_out_subjects_leave_the_pool():
    crops = _crops(unlabelled_subjects=[f"s{i:02d}" for i in range(30)] + ["stranger"])
    sets, _ = split_by_identity(crops, SplitConfig())
    held_out = set(sets["test"].frame["subject"]) | set(
        sets["labelled"].frame.loc[sets["labelled"].frame["split"] == "val", "subject"])
    pool = set(sets["unlabelled"].frame["subject"])
    assert "stranger" in pool and not pool & held_out and len(pool) == 30 - len(held_out) + 1
    assert sets["unlabelled"].meta["split"]["unlabelled_dropped"] == len(held_out)


def test_too_few_subjects_are_named():
    with pytest.raises(TooFewSubjectsError, match=r"at least 3 subjects, the labelled data has 2 \(s00, s01\): add"):
        split_by_identity(_crops(n_subjects=2), SplitConfig())
    with pytest.raises(TooFewSubjectsError, match="has 0: no labelled image reached the split"):
        split_by_identity(_crops(n_subjects=0), SplitConfig())


def test_user_errors_and_the_bug_check_belong_to_their_families():
    assert issubclass(MissingSubjectError, DataError) and issubclass(TooFewSubjectsError, DataError)
    assert issubclass(TooFewSubjectsError, ValueError)  # as the plain ValueError it replaced
    assert issubclass(LeakageError, RuntimeError) and not issubclass(LeakageError, DataError)


def test_emotion_shares_are_balanced_like_au_prevalence():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 3, size=120)
    frame = pd.DataFrame(np.eye(3)[classes], columns=["emotion_a", "emotion_b", "emotion_c"])
    frame.insert(0, "path", [f"/e/{i}.png" for i in range(120)])
    frame.insert(1, "subject", np.repeat([f"p{i}" for i in range(20)], 6))
    frame.insert(2, "origin", "labelled")
    crops = ImageSet(np.zeros((120, 2, 2, 1), dtype=np.uint8), frame, ["emotion_a", "emotion_b", "emotion_c"])
    _, stats = split_by_identity(crops, SplitConfig(draws=20))
    shares = stats.loc[["train", "val", "test"], ["emotion_a", "emotion_b", "emotion_c"]]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert (shares - stats.loc["all", shares.columns]).abs().to_numpy().max() < 0.2
