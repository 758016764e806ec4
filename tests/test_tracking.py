"""The parent run's end state, and runs that a killed process left RUNNING."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from ausynth.tasks import tracking
from ausynth.tasks.tracking import Tracker, tracked_run


def _status(tracker: Tracker, run_id: str) -> str:
    return tracker.client.get_run(run_id).info.status


@pytest.mark.parametrize(("raised", "status"), [(None, "FINISHED"), (ValueError, "FAILED"),
                                                 (KeyboardInterrupt, "KILLED"), (SystemExit, "KILLED")])
def test_parent_run_ends_finished_failed_or_killed(tiny_config, tmp_path, raised, status):
    tracker = Tracker(tiny_config)
    started = []
    with pytest.raises(raised) if raised else pytest.MonkeyPatch.context():
        with tracked_run(tracker, tmp_path) as run_id:
            started.append(run_id)
            if raised:
                raise raised()
    assert _status(tracker, started[0]) == status


def test_a_run_left_running_by_a_dead_process_is_marked_killed_on_the_next_start(tiny_config, tmp_path):
    tracker = Tracker(tiny_config)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tracker.start_parent(tmp_path)
    tracker.set_tags(orphan, {"pid": dead.stdout.strip()})
    alive = tracker.start_parent(tmp_path)  # this process: alive, so left alone
    tracker.start_parent(tmp_path)
    assert _status(tracker, orphan) == "KILLED"
    assert _status(tracker, alive) == "RUNNING"
    assert MlflowClient(tracker.uri).get_run(orphan).data.tags["host"]


def test_child_run_metric_names_follow_one_scheme():
    keys = ["f1_mean", "f1_AU3", "n_not_predicted", "fp/AU2-to-AU3", "pair_fdr/AU2-AU3"]
    assert [tracking.test_metric_name(key, ("f1_mean", "fdr_mean")) for key in keys] == [
        "test/f1_mean", "test/f1/AU3", "test/n/not_predicted", "test/fp/AU2-to-AU3", "test/pair_fdr/AU2-AU3"]


def test_logging_a_model_leaves_no_tracking_uri_behind_for_the_next_comparison(tiny_config, tmp_path, monkeypatch):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into the environment: a later comparison of the
    same process, in another workspace, would then log to this one's store."""
    import numpy as np
    import torch

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(tiny_config)
    with tracked_run(tracker, tmp_path) as parent:
        child, _ = tracker.child_run(parent, "supervised", 0)
        uri = tracker.log_classifier(child, torch.nn.Linear(4, 2), np.zeros((1, 4), np.float32), "model", {})
    assert uri.startswith("models:/") and "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking.tracking_uri(tiny_config.model_copy(update={"workspace": tmp_path / "other"})).endswith(
        f"{tmp_path / 'other'}/mlflow.db")


def test_a_champion_alias_lost_to_a_simultaneous_run_is_retried_against_the_new_holder(tiny_config, tmp_path):
    """Two runs on one server can both find no champion and both set the alias: the SQL store refuses
    the second insert. The loser re-reads the holder and keeps the alias only if it scores higher."""
    import numpy as np
    import torch
    from mlflow.exceptions import MlflowException

    tracker = Tracker(tiny_config)
    real_set = tracker.client.set_registered_model_alias
    refusals = []

    def refuse_once(name, alias, version):
        if not refusals:
            refusals.append(version)
            raise MlflowException("UNIQUE constraint failed: registered_model_aliases")
        real_set(name, alias, version)

    tracker.client.set_registered_model_alias = refuse_once
    with tracked_run(tracker, tmp_path) as parent:
        child, _ = tracker.child_run(parent, "supervised", 0)
        uri = tracker.log_classifier(child, torch.nn.Linear(4, 2), np.zeros((1, 4), np.float32), "model", {})
        version = tracker.register(parent, "race-model", child, uri, 0.5, "test-a", {"strategy": "supervised"})
    assert refusals == [version]
    assert str(tracker.client.get_model_version_by_alias("race-model", "champion").version) == version


def test_a_model_logged_where_a_gpu_is_visible_validates_its_input_example_on_the_cpu(tiny_config, tmp_path,
                                                                                       monkeypatch, caplog):
    """MLflow checks a logged model by loading it on CUDA when a GPU is visible, but the exported program
    holds the CPU weights it was traced with: without a CPU default the check failed with a long warning for
    every classifier of a GPU run."""
    import numpy as np
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    tracker = Tracker(tiny_config)
    with tracked_run(tracker, tmp_path) as parent:
        child, _ = tracker.child_run(parent, "supervised", 0)
        tracker.log_classifier(child, torch.nn.Linear(4, 2), np.zeros((1, 4), np.float32), "model", {})
    assert "Failed to validate serving input example" not in caplog.text
    assert "MLFLOW_DEFAULT_PREDICTION_DEVICE" not in os.environ
