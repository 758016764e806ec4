"""Shared fixtures: tiny configs, a per-test workspace, the optional real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry calls
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ausynth")

from ausynth.configs.loader import load_config  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("AUSYNTH_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} is absent (set AUSYNTH_SHARED_DATA to its parent folder)")
    return folder


TINY = [
    "dataset.labelled=200", "dataset.unlabelled=200", "dataset.test_per_au=10",
    "classifier.max_epochs=2", "classifier.patience=2", "classifier.width=4", "classifier.batch_size=50",
    "augment.size=100", "seeds=[0]",
    "generator.steps=4", "generator.base_channels=4", "generator.batch_size=4", "generator.log_every=2",
    "generator.sample_every=2", "generator.checkpoint_every=2",
]


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    return [*TINY, f"workspace={tmp_path / 'ws'}"]


@pytest.fixture
def tiny_config(tiny_overrides):
    return load_config("toy-quick", tiny_overrides)


@pytest.fixture(autouse=True)
def _no_outside_mlflow(monkeypatch):
    """Tests track into their own workspace, never a URI set in the developer's shell."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _prefect_test_server():
    """One temporary Prefect API for the whole session, instead of one per flow call."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

