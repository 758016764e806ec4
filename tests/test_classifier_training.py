"""Early stopping (monitor, min_delta, min_epochs), the best-epoch record and the never-learnt flag.

Tiny synthetic sets (16x16 images, two AUs) so each test takes a second or two; the validation
record is faked where a test is about the stopping rule rather than about learning.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

import ausynth.tasks.train_classifier as tc
from ausynth.configs.loader import load_config
from ausynth.configs.schema import ClassifierConfig
from ausynth.tasks.imageset import ImageSet

CPU = torch.device("cpu")
AUS = ["AU1", "AU2"]
THESIS = dict(loss="mse", optimizer="radam", lr=1e-3, batch_size=100, max_epochs=1000, patience=20,
              monitor="val_loss", min_delta=0.0, min_epochs=1)


def squares(n: int, seed: int, labels: np.ndarray | None = None) -> ImageSet:
    """AU k shows as a bright 6x6 square in place k of a dark 16x16 image (AUs drawn independently)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = (rng.random((n, 2)) < 0.5).astype(np.float32)
    images = rng.integers(0, 40, size=(n, 16, 16, 1), dtype=np.uint8)
    images[labels[:, 0] > 0.5, 2:8, 2:8] = 255
    images[labels[:, 1] > 0.5, 9:15, 9:15] = 255
    frame = pd.DataFrame(labels, columns=AUS)
    frame.insert(0, "subject", [f"s{i}" for i in range(n)])
    return ImageSet(images, frame, list(AUS), {"label_type": "au_presence"})


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet]:
    return squares(64, 0), squares(32, 1)


def fake_records(monkeypatch, records: list[dict[str, float]]) -> None:
    """Replace validation with a fixed sequence of records (repeating the last one)."""
    calls = iter(range(10_000))

    def fake_validate(model, *args):
        return dict(records[min(next(calls), len(records) - 1)])

    monkeypatch.setattr(tc, "_validate", fake_validate)


def quick(**kw) -> ClassifierConfig:
    return ClassifierConfig(**{"width": 4, "batch_size": 64, "min_epochs": 1, **kw})


def test_min_delta_stops_on_a_slow_creep(data, monkeypatch):
    """Validation loss falling by 1e-5 per epoch (issue #11 item 5): min_delta 0 never stops, min_delta 1e-4 does."""
    creep = [{"val_loss": 0.1 - 1e-5 * i, "val_f1": 1.0} for i in range(40)]
    fake_records(monkeypatch, creep)
    never = tc.train_classifier(*data, quick(monitor="val_loss", patience=5, max_epochs=40), 0, CPU)
    assert never.epochs == 40 and not never.stopped_early and never.best_epoch == 40

    fake_records(monkeypatch, creep)
    stops = tc.train_classifier(*data, quick(monitor="val_loss", patience=5, max_epochs=40, min_delta=1e-4), 0, CPU)
    # epoch 1 sets the reference; no later epoch beats it by more than 1e-4 within 5 epochs
    assert stops.stopped_early and stops.epochs == 6
    assert stops.best_epoch == 6  # the weights kept are still the lowest loss seen, by any margin


def test_min_epochs_holds_off_early_stopping(data, monkeypatch):
    flat = [{"val_loss": 0.5, "val_f1": 0.0}]
    fake_records(monkeypatch, flat)
    early = tc.train_classifier(*data, quick(patience=2, min_epochs=1, max_epochs=30), 0, CPU)
    assert early.epochs == 3 and early.stopped_early
    fake_records(monkeypatch, flat)
    held = tc.train_classifier(*data, quick(patience=2, min_epochs=8, max_epochs=30), 0, CPU)
    assert held.epochs == 8 and held.stopped_early


def test_monitor_picks_the_epoch_and_breaks_ties_by_loss(data, monkeypatch):
    """val_f1 rises while val_loss rises (over-confidence): each monitor keeps its own best epoch."""
    records = [{"val_loss": 0.30, "val_f1": 0.10}, {"val_loss": 0.35, "val_f1": 0.50},
               {"val_loss": 0.40, "val_f1": 0.70}, {"val_loss": 0.38, "val_f1": 0.70},
               {"val_loss": 0.45, "val_f1": 0.60}]
    fake_records(monkeypatch, records)
    by_loss = tc.train_classifier(*data, quick(monitor="val_loss", patience=3, max_epochs=5), 0, CPU)
    assert (by_loss.best_epoch, by_loss.monitor, by_loss.epochs, by_loss.stopped_early) == (1, "val_loss", 4, True)
    fake_records(monkeypatch, records)
    by_f1 = tc.train_classifier(*data, quick(monitor="val_f1", patience=3, max_epochs=5), 0, CPU)
    assert (by_f1.best_epoch, by_f1.monitor, by_f1.epochs, by_f1.stopped_early) == (4, "val_f1", 5, False)


def test_a_monitor_the_label_type_lacks_falls_back_to_its_score(monkeypatch):
    """val_f1 asked of a valence/arousal regression monitors val_ccc."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(24, 16, 16, 1), dtype=np.uint8)
    frame = pd.DataFrame(rng.uniform(-1, 1, size=(24, 2)).astype(np.float32), columns=["valence", "arousal"])
    va = ImageSet(images, frame, ["valence", "arousal"], {"label_type": "valence_arousal"})
    fake_records(monkeypatch, [{"val_loss": 0.3, "val_ccc": 0.1}, {"val_loss": 0.4, "val_ccc": 0.3}])
    trained = tc.train_classifier(va, va, quick(monitor="val_f1", max_epochs=2), 0, CPU)
    assert trained.monitor == "val_ccc" and trained.best_epoch == 2 and not trained.never_learnt


def test_never_learnt_is_flagged_and_logged(caplog):
    """All-zero labels: the model can only learn to say 'no AU', which is the all-negative plateau."""
    zeros = np.zeros((48, 2), dtype=np.float32)
    train, val = squares(48, 2, zeros), squares(16, 3, zeros[:16])
    with caplog.at_level(logging.WARNING, logger="ausynth"):
        trained = tc.train_classifier(train, val, quick(max_epochs=3, lr=1e-2), 0, CPU, desc="supervised/seed7")
    assert trained.never_learnt and trained.never_learnt_reason
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "NEVER LEARNT" in r.getMessage()]
    assert warning and "supervised/seed7" in warning[0].getMessage()


def test_a_tiny_lr_never_learns_and_a_sane_one_does(data):
    frozen = tc.train_classifier(*data, quick(max_epochs=3, lr=1e-9, monitor="val_f1"), 0, CPU)
    assert frozen.never_learnt
    learnt = tc.train_classifier(*data, quick(max_epochs=15, lr=1e-2, batch_size=16, loss="bce", monitor="val_f1",
                                              patience=15), 0, CPU)
    assert not learnt.never_learnt and learnt.never_learnt_reason == ""
    assert learnt.history[learnt.best_epoch - 1]["val_f1"] > 0.9


def test_input_noise_is_drawn_from_the_seed_in_training_only(data, monkeypatch):
    """Input noise changes what a training pass sees, the same way for the same seed, and never what
    validation or prediction sees."""
    cfg = quick(max_epochs=2)
    weights = {noise: [tc.train_classifier(*data, cfg.model_copy(update={"input_noise": noise}), 0, CPU)
                       .model.state_dict() for _ in range(2)] for noise in (0.0, 1.0)}
    again = weights[1.0]
    assert all(torch.equal(again[0][k], again[1][k]) for k in again[0])
    assert not all(torch.equal(again[0][k], weights[0.0][0][k]) for k in again[0])
    seen = []
    original = tc.AUClassifier.forward
    monkeypatch.setattr(tc.AUClassifier, "forward", lambda self, x: seen.append((self.training, x.clone()))
                        or original(self, x))
    tc.train_classifier(*data, quick(max_epochs=1, input_noise=1.0), 0, CPU)
    trained = [x for training, x in seen if training]
    evaluated = [x for training, x in seen if not training]
    assert trained and evaluated
    assert all(x.min() < -1.5 or x.max() > 1.5 for x in trained)  # beyond [-1, 1]: noise was added
    assert all(-1 <= x.min() and x.max() <= 1 for x in evaluated)
    assert sum(len(x) for x in trained) == len(data[0])


def test_classifier_config_fields_are_checked():
    with pytest.raises(ValidationError):
        ClassifierConfig(min_delta=-0.1)
    with pytest.raises(ValidationError):
        ClassifierConfig(monitor="val_auc")
    with pytest.raises(ValidationError):
        ClassifierConfig(min_epochs=0)
    with pytest.raises(ValidationError):
        ClassifierConfig(input_noise=-1)


def test_default_profile_is_the_reliable_one():
    """The library default trains reliably (see ClassifierConfig's docstring for the measurements' summary)."""
    default = ClassifierConfig()
    assert (default.loss, default.optimizer, default.batch_size, default.monitor, default.min_epochs) == \
        ("bce", "adam", 32, "val_f1", 10)


def test_toy_paper_keeps_the_thesis_profile_exactly():
    for name in ("toy-paper", "toy-paper-3k-medium", "toy-paper-3k-hard", "toy-paper-30k-medium", "toy-paper-30k-hard"):
        cfg = load_config(name).classifier
        assert {k: getattr(cfg, k) for k in THESIS} == THESIS, name


def test_a_classifier_trained_beside_other_seeding_threads_gets_the_same_weights(data):
    """Tasks on the threads runner share torch's global RNG: a neighbour that seeds and draws (as another
    task's network initialisation does, inside ``device.seeded``) must not change this one's weights."""
    import sys
    import threading

    from ausynth.tasks.device import seeded

    cfg = quick(max_epochs=1)
    alone = tc.train_classifier(*data, cfg, 0, CPU).model.state_dict()
    stop = threading.Event()

    def neighbour() -> None:
        while not stop.is_set():
            with seeded(1):
                torch.rand(64)

    thread = threading.Thread(target=neighbour)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns every few bytecodes: a race shows up at once
    thread.start()
    try:
        beside = [tc.train_classifier(*data, cfg, 0, CPU).model.state_dict() for _ in range(5)]
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    for state in beside:
        assert all(torch.equal(state[k], alone[k]) for k in alone)


@pytest.mark.parametrize(("device", "avx512_bf16", "amx", "expected"), [
    ("cpu", True, False, torch.bfloat16), ("cpu", False, True, torch.bfloat16), ("cpu", False, False, None),
    ("cuda", False, False, torch.float16), ("mps", True, True, None)])
def test_amp_resolves_to_the_precision_the_device_computes_natively(monkeypatch, device, avx512_bf16, amx, expected):
    from ausynth.tasks.device import mixed_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert mixed_precision(torch.device(device), True) is expected
    assert mixed_precision(torch.device(device), False) is None


def test_amp_trains_in_bfloat16_and_still_learns(data, monkeypatch):
    """With amp on a bf16 CPU the training passes' outputs are bfloat16 (validation stays float32), and the
    model learns as the float32 one does."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    seen: dict[bool, set] = {True: set(), False: set()}
    original = tc.AUClassifier.forward

    def spy(self, x):
        out = original(self, x)
        seen[self.training].add(out.dtype)
        return out

    monkeypatch.setattr(tc.AUClassifier, "forward", spy)
    cfg = quick(max_epochs=15, lr=1e-2, batch_size=16, loss="bce", monitor="val_f1", patience=15)
    mixed = tc.train_classifier(*data, cfg, 0, CPU)
    assert seen == {True: {torch.bfloat16}, False: {torch.float32}}
    full = tc.train_classifier(*data, cfg.model_copy(update={"amp": False}), 0, CPU)
    assert seen[True] == {torch.bfloat16, torch.float32}
    for trained in (mixed, full):
        assert trained.history[trained.best_epoch - 1]["val_f1"] > 0.9
    assert any(not torch.equal(a, b) for a, b in zip(mixed.model.state_dict().values(),
                                                     full.model.state_dict().values()))
