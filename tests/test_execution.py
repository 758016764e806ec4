"""Execution settings: the same comparison on the sequential, threads and dask runners, thread control
inside tasks, GPU tasks one at a time, and a Dask address nobody answers."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from ausynth.configs.execution import ExecutionConfig
from ausynth.configs.loader import load_config
from ausynth.flows.compare import compare_strategies
from ausynth.tasks import prefect_tasks
from ausynth.tasks.device import THREAD_VARIABLES
from ausynth.tasks.errors import DataError, SetupError
from ausynth.tasks.execution import Execution, Submitter, effective, run_in

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the probe tasks below run in Dask workers too

pytestmark = pytest.mark.slow
STRATEGIES = ["supervised", "upsample", "pseudo_label", "generator"]


@pytest.fixture(autouse=True)
def _keep_process_threads():
    """Tasks run in this process (sequential, threads) set its torch threads and OMP_NUM_THREADS; undo it."""
    threads, saved = torch.get_num_threads(), {k: os.environ.get(k) for k in THREAD_VARIABLES}
    yield
    torch.set_num_threads(threads)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def comparison(tiny_overrides: list[str], tmp_path: Path, runner: str) -> tuple:
    """A tiny comparison (4 strategies x 2 seeds) in its own workspace; its table, child runs and store."""
    workspace = tmp_path / runner
    result = compare_strategies("toy-quick", overrides=[*tiny_overrides, "seeds=[0, 1]", f"workspace={workspace}",
                                                        f"execution.task_runner={runner}", "execution.workers=2"])
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    runs = {(r.data.tags["strategy"], r.data.tags["seed"]): (r.info.status, r.data.params,
                                                             {k: v for k, v in r.data.metrics.items()
                                                              if k.startswith(("test/", "val/", "train/loss"))})
            for r in children}
    assert len(runs) == len(children)  # one run per (strategy, seed)
    store = sorted(str(p.relative_to(workspace / "store")) for p in (workspace / "store").glob("*/*"))
    return result.table, runs, store, parent.data.params["execution.task_runner"]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    from conftest import TINY

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return comparison(TINY, tmp_path_factory.mktemp("sequential"), "sequential")


def test_a_comparison_on_dask_gives_exactly_the_sequential_results(sequential, tmp_path):
    """Two single-threaded worker processes: the same table, child runs, logged numbers and store entries,
    to the last digit."""
    from conftest import TINY

    table, runs, store, used = comparison(TINY, tmp_path, "dask")
    seq_table, seq_runs, seq_store, seq_used = sequential
    assert (used, seq_used) == ("dask", "sequential")
    assert list(table.index) == STRATEGIES and (table["seeds"] == 2).all()
    pd.testing.assert_frame_equal(table, seq_table, check_exact=True)
    assert runs.keys() == seq_runs.keys() == {(s, str(seed)) for s in STRATEGIES for seed in (0, 1)}
    for key, (status, params, metrics) in runs.items():
        assert status == "FINISHED"
        assert params == seq_runs[key][1], key
        assert metrics == seq_runs[key][2], key
    assert store == seq_store  # the same store entries: same keys, nothing trained twice


def test_a_comparison_on_threads_gives_exactly_the_sequential_results(sequential, tmp_path):
    """Tasks on threads of one process: the same table, child runs, logged numbers and store entries, to the
    last digit (the classifiers' models are logged after every training: torch.export, which MLflow saves
    them with, turns oneDNN off process-wide while it traces, and a training beside it would change)."""
    from conftest import TINY

    table, runs, store, used = comparison(TINY, tmp_path, "threads")
    seq_table, seq_runs, seq_store, _ = sequential
    assert used == "threads" and list(table.index) == STRATEGIES
    pd.testing.assert_frame_equal(table, seq_table, check_exact=True)
    assert runs.keys() == seq_runs.keys() and store == seq_store
    for key, (status, params, metrics) in runs.items():
        assert status == "FINISHED"
        assert params == seq_runs[key][1], key
        assert metrics == seq_runs[key][2], key


def test_a_dask_address_nobody_answers_fails_fast_naming_it(tiny_overrides, tmp_path):
    address = f"tcp://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(SetupError, match=f"execution.dask_address {address}: no Dask scheduler answers") as error:
        compare_strategies("toy-quick", overrides=[*tiny_overrides, f"execution.dask_address={address}"])
    assert time.monotonic() - start < 30  # the flow's own start-up included
    assert "dask scheduler" in str(error.value)
    assert not (tmp_path / "ws" / "runs").exists()  # nothing was run


def test_settings_defaults_validation_and_environment():
    two = ExecutionConfig(task_runner="dask")
    assert two.threads(cores=2) == 1 and two.threads(cores=16) == 8 and two.threads(cores=1) == 1
    assert ExecutionConfig().threads(cores=8) == 4  # sequential too: every runner computes the same numbers
    assert ExecutionConfig(task_runner="threads", threads_per_task=3).threads(cores=2) == 3
    assert ExecutionConfig(dask_address="tcp://10.0.0.5:8786").task_runner == "dask"
    with pytest.raises(ValueError, match="not a Dask scheduler address"):
        ExecutionConfig(dask_address="10.0.0.5")
    with pytest.raises(ValueError, match="dask_address is set but task_runner is 'threads'"):
        ExecutionConfig(task_runner="threads", dask_address="tcp://h:1")
    env = {"AUSYNTH_TASK_RUNNER": "threads", "AUSYNTH_WORKERS": "4"}
    assert ExecutionConfig().with_environment(env) == ExecutionConfig(task_runner="threads", workers=4)
    assert ExecutionConfig(workers=3).with_environment(env).workers == 3  # the config wins
    cfg = effective(load_config("toy-quick", ["execution.task_runner=threads", "execution.workers=2"]))
    assert cfg.execution.threads_per_task >= 1 and cfg.workspace.is_absolute()


def test_every_task_pickles_for_dask_workers():
    """A Dask worker receives each task pickled; a lock or open file among a task function's globals breaks that."""
    from prefect import Task

    tasks = [value for value in vars(prefect_tasks).values() if isinstance(value, Task)]
    assert len(tasks) >= 9
    for each in tasks:
        cloudpickle.loads(cloudpickle.dumps(each))


# -------------------------------------------------------------------- probes of the mechanism


@task(name="threads-probe", cache_policy=NO_CACHE)
def threads_probe(cfg) -> tuple[int, str]:
    with prefect_tasks.stage(cfg, "threads probe"):
        return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "")


def interval(cfg, seconds: float) -> tuple[int, float, float]:
    with prefect_tasks.stage(cfg, "probe"):
        start = time.time()
        time.sleep(seconds)
        return os.getpid(), start, time.time()


@task(name="train-classifier", cache_policy=NO_CACHE)  # a GPU task by name (prefect_tasks.GPU_TASKS)
def gpu_probe(cfg, seconds: float) -> tuple[int, float, float]:
    return interval(cfg, seconds)


@task(name="dataset-report", cache_policy=NO_CACHE)  # a CPU task
def cpu_probe(cfg, seconds: float) -> tuple[int, float, float]:
    return interval(cfg, seconds)


@task(name="failing-probe", cache_policy=NO_CACHE)
def failing_probe(cfg) -> None:
    with prefect_tasks.stage(cfg, "failing probe"):
        raise DataError("row 7 has no label")


@flow(name="execution-probe", validate_parameters=False)
def probe_dag(cfg, gpu: bool, fail: bool = False):
    execution = Execution(cfg.execution, gpu)
    execution.dag_started()
    submit = Submitter(execution, prefect_tasks.GPU_TASKS)
    threads = [submit(threads_probe, cfg) for _ in range(2)]
    gpus = [submit(gpu_probe, cfg, 1.5) for _ in range(3)]
    cpus = [submit(cpu_probe, cfg, 1.0) for _ in range(3)]
    if fail:
        submit(failing_probe, cfg)
    submit.wait()
    return [f.result() for f in threads], [f.result() for f in gpus], [f.result() for f in cpus]


def probe(runner: str, threads: int, gpu: bool, fail: bool = False):
    cfg = load_config("toy-quick", [f"execution.task_runner={runner}", "execution.workers=2",
                                    f"execution.threads_per_task={threads}"])
    return run_in(Execution(cfg.execution, gpu), probe_dag, cfg, gpu, fail)


def overlaps(a: tuple, b: tuple) -> bool:
    return a[1] < b[2] and b[1] < a[2]


@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_threads_per_task_and_one_gpu_task_at_a_time(runner):
    """On a 'GPU' run (forced here, on the CPU) the training tasks never overlap, and on dask they all run on
    the one worker that has the GPU resource, while CPU tasks run beside them; every task has its threads."""
    threads, gpus, cpus = probe(runner, threads=1, gpu=True)
    assert threads == [(1, "1")] * 2
    assert not any(overlaps(a, b) for i, a in enumerate(gpus) for b in gpus[i + 1:]), gpus
    assert any(overlaps(g, c) for g in gpus for c in cpus), (gpus, cpus)  # the other worker is not idle meanwhile
    if runner == "dask":
        assert len({pid for pid, _, _ in gpus}) == 1 and os.getpid() not in {pid for pid, _, _ in gpus}
    threads, gpus, cpus = probe(runner, threads=2, gpu=False)
    assert threads == [(2, "2")] * 2
    assert any(overlaps(a, b) for i, a in enumerate(gpus) for b in gpus[i + 1:]), gpus  # no GPU: no limit


@pytest.mark.parametrize("runner", ["sequential", "threads"])
def test_a_failing_task_fails_the_run_with_its_own_error(runner):
    with pytest.raises(DataError, match="row 7 has no label"):
        probe(runner, threads=1, gpu=False, fail=True)


def test_slots_serve_the_earliest_submitted_first():
    from ausynth.tasks.execution import Slots

    slots, order, started = Slots(1), [], threading.Event()

    def hold(priority: int, wait: float) -> None:
        with slots.hold(priority):
            started.set()
            order.append(priority)
            time.sleep(wait)

    first = threading.Thread(target=hold, args=(0, 0.3))
    first.start()
    started.wait()
    waiting = [threading.Thread(target=hold, args=(p, 0.0)) for p in (5, 3, 4, 1)]
    for thread in waiting:
        thread.start()
        time.sleep(0.02)
    for thread in [first, *waiting]:
        thread.join()
    assert order == [0, 1, 3, 4, 5]


# -------------------------------------------------------------------- a work pool with a process worker


def _launch(args: list[str], env: dict[str, str], log: Path, cwd: Path):
    import subprocess

    return subprocess.Popen(args, env=env, cwd=cwd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc) -> None:
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.servers
def test_a_deployment_runs_on_a_process_work_pool_with_its_execution_settings(tmp_path):
    """A Prefect server, a ``process`` work pool, the compare flow deployed to it from this checkout and a
    process worker polling it: a triggered run completes, on the Dask runner its parameters asked for."""
    import subprocess

    import requests
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from conftest import TINY

    repo, bin_dir, port = Path(__file__).resolve().parent.parent, Path(sys.executable).parent, closed_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_EXTRA_LOGGERS="ausynth")
    server = _launch([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                     env, tmp_path / "server.log", tmp_path)
    worker = None
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{api}/health", timeout=3).ok:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        subprocess.run([str(bin_dir / "prefect"), "work-pool", "create", "ausynth-process", "--type", "process"],
                       env=env, check=True, capture_output=True, timeout=120)
        with temporary_settings({PREFECT_API_URL: api}):
            compare_strategies.from_source(source=str(repo), entrypoint="flows/compare.py:compare_strategies").deploy(
                name="compare-on-pool", work_pool_name="ausynth-process", build=False, push=False,
                print_next_steps=False, ignore_warnings=True)
            worker = _launch([str(bin_dir / "prefect"), "worker", "start", "--pool", "ausynth-process", "--type",
                              "process", "--install-policy", "never"], env, tmp_path / "worker.log", tmp_path)
            workspace = tmp_path / "ws"
            run = run_deployment("ausynth-compare/compare-on-pool", timeout=600, parameters={
                "config": "toy-quick", "strategies": ["supervised", "upsample"],
                "overrides": [*TINY, f"workspace={workspace}", "execution.task_runner=dask", "execution.workers=2"]})
        assert run.state.is_completed(), (run.state, (tmp_path / "worker.log").read_text()[-5000:])
        client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
        (parent,) = client.search_runs([client.get_experiment_by_name("ausynth-toy").experiment_id],
                                       "tags.`ausynth.kind` = 'comparison'")
        assert parent.data.params["execution.task_runner"] == "dask" and parent.info.status == "FINISHED"
        children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert sorted(r.data.tags["strategy"] for r in children) == ["supervised", "upsample"]
    finally:
        for proc in (worker, server):
            if proc is not None:
                _stop(proc)
