"""The server mode for real: Prefect server + MLflow server + the served deployments.

Starts the servers on free loopback ports (tests/server_stack.py), triggers two tiny
comparisons at once through the Prefect API (one with ``prefect deployment run``, one with
``run_deployment``), waits for them and reads the results back through MLflow's REST API. Also:
the deployments' forms, the nightly schedule's runs on the server, and the fast, clear error
when the MLflow server is down.
"""

from __future__ import annotations

import importlib.util
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from server_stack import TINY_PARAMS, Stack, free_port, shared_stack

pytestmark = [pytest.mark.servers, pytest.mark.slow]


@pytest.fixture
def stack(request, tmp_path_factory) -> Stack:
    return shared_stack(request, tmp_path_factory)


@pytest.fixture
def keep_logs_on_failure(request, stack):
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(f"server logs kept in {stack.keep_logs(request.node.name)}")


def test_deployments_are_registered_with_typed_forms(stack):
    deployments = stack.deployments()
    expected = {"compare", "nightly-toy-quick", "prepare-dataset"}
    if importlib.util.find_spec("ausynth.flows.train_generator") is not None:
        expected.add("train-generator")
    assert expected <= set(deployments), f"registered: {sorted(deployments)}"
    for deployment in deployments.values():
        assert deployment["entrypoint"].startswith("ausynth.flows.") and not deployment["paused"]

    form = deployments["compare"]["parameter_openapi_schema"]["properties"]
    assert {"config", "strategies", "seeds", "difficulty", "labelled", "augment_size", "max_epochs", "device",
            "overrides"} <= set(form)
    assert form["config"]["default"] == "toy-quick"
    text = str(form)  # enums and item types are what the UI turns into drop-downs and lists
    for word in ("'clean'", "'medium'", "'hard'", "'pseudo_label'", "'cuda'", "'integer'"):
        assert word in text
    assert set(deployments["prepare-dataset"]["parameter_openapi_schema"]["properties"]) == {"config", "overrides"}


def test_nightly_schedule_creates_scheduled_runs(stack):
    nightly = stack.deployments()["nightly-toy-quick"]
    (schedule,) = nightly["schedules"]
    assert schedule["active"] and schedule["schedule"]["cron"] == "0 3 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert nightly["parameters"] == {"config": "toy-quick"}

    scheduled: list[dict] = []

    def found() -> bool:
        scheduled[:] = stack.api("POST", "/flow_runs/filter", {
            "deployments": {"id": {"any_": [nightly["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
        return bool(scheduled)

    stack.wait_until("the nightly schedule's runs", found, 90, ("prefect",))
    now = datetime.now(timezone.utc)
    for run in scheduled:
        when = datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00"))
        assert when > now and (when.hour, when.minute) == (3, 0)
    assert {run["parameters"]["config"] for run in scheduled} == {"toy-quick"}


def test_mlflow_server_down_fails_fast_with_a_clear_error(tiny_overrides, tmp_path, monkeypatch, stack):
    from ausynth.flows.compare import compare_strategies
    from ausynth.tasks.tracking import TrackingUnavailable, check_tracking

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err:
        check_tracking(dead)
    assert time.monotonic() - start < 6
    message = str(err.value)
    assert dead in message and "not reachable" in message
    assert "make serve" in message and "unset MLFLOW_TRACKING_URI" in message

    check_tracking(stack.mlflow_url)  # a live server passes

    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="not reachable"):
        compare_strategies("toy-quick", overrides=tiny_overrides)
    assert time.monotonic() - start < 60
    workspace = tmp_path / "ws"
    assert not (workspace / "runs").exists() and not (workspace / "store").exists()  # no work was started


def test_two_runs_at_once_complete_into_separate_folders_and_mlflow_runs(stack, keep_logs_on_failure):
    runs = stack.finished_comparisons()
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], (
        [r["state"]["message"] for r in runs], stack.log_tail("serve"))
    assert all(r["parameters"] == TINY_PARAMS for r in runs)
    first, second = ([datetime.fromisoformat(r[k].replace("Z", "+00:00")) for k in ("start_time", "end_time")]
                     for r in runs)
    assert first[0] < second[1] and second[0] < first[1], "the two flow runs did not overlap"

    experiment = stack.mlflow("GET", "experiments/get-by-name", params={"experiment_name": "ausynth-toy"})
    experiment_id = experiment["experiment"]["experiment_id"]
    parents = stack.mlflow("POST", "runs/search", json={
        "experiment_ids": [experiment_id], "filter": "tags.`ausynth.kind` = 'comparison'"})["runs"]
    assert len(parents) == 2
    output_dirs = set()
    for parent in parents:
        info, data = parent["info"], parent["data"]
        tags = {t["key"]: t["value"] for t in data["tags"]}
        params = {p["key"]: p["value"] for p in data["params"]}
        assert info["status"] == "FINISHED"
        # The form's fields reached the config exactly as `ausynth run --set ...` would set them.
        assert params["dataset.labelled"] == "200" and params["augment.size"] == "100"
        assert params["classifier.max_epochs"] == "2" and params["classifier.width"] == "4"
        assert params["seeds"] == "0" and params["device"] == "cpu"
        output_dir = Path(tags["output_dir"])
        output_dirs.add(output_dir)
        assert output_dir.parent == stack.workspace / "runs"  # relative workspace: the serve process' cwd
        assert (output_dir / "comparison.csv").is_file()
        artifacts = {f["path"] for f in stack.mlflow("GET", "artifacts/list",
                                                       params={"run_id": info["run_id"]}).get("files", [])}
        assert {"comparison.csv", "per_output_f1.png", "config.yaml"} <= artifacts

        children = stack.mlflow("POST", "runs/search", json={
            "experiment_ids": [experiment_id], "filter": f"tags.mlflow.parentRunId = '{info['run_id']}'"})["runs"]
        strategies = sorted({t["key"]: t["value"] for t in c["data"]["tags"]}["strategy"] for c in children)
        assert strategies == ["supervised", "upsample"]
        for child in children:
            assert child["info"]["status"] == "FINISHED"
            assert {"test/f1_mean", "test/fdr_mean"} <= {m["key"] for m in child["data"]["metrics"]}
    assert len(output_dirs) == 2


def test_two_runs_building_the_same_store_entry_keep_the_first(tmp_path):
    """Runs started together build the same dataset; the entry one of them reads is never replaced."""
    from ausynth.tasks.store import cached_folder

    entry = tmp_path / "datasets" / "k"

    def build(tmp: Path) -> None:
        (tmp / "data").write_text("second")
        # meanwhile another run finishes the same entry first
        cached_folder(tmp_path, "datasets", "k", lambda other: (other / "data").write_text("first"))

    assert cached_folder(tmp_path, "datasets", "k", build) == entry
    assert (entry / "data").read_text() == "first"
    assert [p.name for p in entry.parent.iterdir()] == ["k"]  # the second copy is gone


def test_two_runs_creating_the_experiment_at_once_share_it(tiny_config, monkeypatch):
    from ausynth.tasks.tracking import Tracker

    tracker = Tracker(tiny_config)
    client = tracker.client
    created = client.create_experiment(tiny_config.experiment)  # by the other run, just after our lookup
    lookup = client.get_experiment_by_name
    calls: list[str] = []

    def too_early(name: str):
        calls.append(name)
        return None if len(calls) == 1 else lookup(name)

    monkeypatch.setattr(client, "get_experiment_by_name", too_early)
    assert tracker.experiment_id() == created
    assert len(calls) == 2  # it looked again after its own create failed
