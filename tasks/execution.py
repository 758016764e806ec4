"""How the comparison's tasks run: the Prefect task runner, threads per task, and the GPU.

``execution.task_runner`` (``configs/execution.py``) picks one of three ways; the DAG
(``flows/compare.py``) is the same code for all of them and submits every task through a
``Submitter``:

- ``sequential``: each task is called in the flow's own thread when it is submitted, in the DAG's
  order (the order of a plain Prefect flow that calls its tasks).
- ``threads``: Prefect's ``ThreadPoolTaskRunner``. Each submitted task gets a thread at once and
  waits there for its inputs; only ``workers`` of them compute at a time (``Slots``), so a task
  waiting for its inputs never holds a worker. When several are ready, the one submitted first
  goes first: the generator, submitted before the strategies' classifiers, never waits behind them,
  and the baseline's short trainings, submitted last (``flows/compare.longest_first``), fill the end.
- ``dask``: prefect-dask's ``DaskTaskRunner``, on a local cluster of ``workers`` worker processes
  with one task thread each (``local_cluster``), or on the cluster whose scheduler is at
  ``execution.dask_address``. Dask waits for inputs itself; submission order becomes Dask's
  priority, as above.

Every task starts with ``task_started``: torch, OpenMP, MKL and BLAS get
``execution.threads_per_task`` threads, so concurrent tasks never ask for more threads than the
machine has cores.

**The GPU**: when the run's device is CUDA, the tasks that train (classifiers, the oracle, the
generator) take the GPU one at a time, while the others (dataset report, pool scoring, image
generation, evaluation, publishing) run beside them. With ``threads`` a GPU task waits for the
process' GPU slot before it computes; with ``dask`` GPU tasks need the worker resource ``GPU``
(``resources={"GPU": 1}``), which the local cluster gives its first worker only, and which a
worker of an existing cluster advertises when started with ``dask worker ... --resources GPU=1``.
On a CPU run all of this is a no-op.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ausynth.configs.execution import ExecutionConfig
from ausynth.tasks.device import THREAD_VARIABLES, use_threads
from ausynth.tasks.errors import SetupError

log = logging.getLogger("ausynth")

CONNECT_TIMEOUT = 5.0  # seconds to reach a Dask scheduler before giving up
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# ---------------------------------------------------------------------------- inside every task

class Slots:
    """At most ``count`` holders at once; waiters are served lowest ``priority`` first (then first come)."""

    def __init__(self, count: int) -> None:
        self.count, self._free = count, count
        self._waiting: list[tuple[int, int]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, priority: int) -> Iterator[None]:
        entry = (priority, next(self._order))
        with self._cond:
            heapq.heappush(self._waiting, entry)
            while not (self._free and self._waiting[0] == entry):
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()  # the next waiter may fit too
        try:
            yield
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()


@dataclass
class Control:
    """The flow process' limits for tasks on its threads (``threads`` runner only)."""

    compute: Slots
    gpu: Slots | None  # None: the run does not use a GPU


_CONTROL: contextvars.ContextVar[Control | None] = contextvars.ContextVar("ausynth_control", default=None)
_PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("ausynth_priority", default=0)


@contextlib.contextmanager
def task_started(execution: ExecutionConfig, gpu: bool = False) -> Iterator[None]:
    """What every task does first: set its threads; on the ``threads`` runner, wait for the GPU (a GPU task
    on a CUDA run) and for a compute slot. Its inputs are ready by then: Prefect resolves them first."""
    use_threads(execution.threads())
    control = _CONTROL.get()
    if control is None:
        yield
        return
    priority = _PRIORITY.get()
    with (control.gpu.hold(priority) if gpu and control.gpu else contextlib.nullcontext()), \
            control.compute.hold(priority):
        yield


# ---------------------------------------------------------------------------- in the flow

def thread_environment(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in THREAD_VARIABLES}


def local_cluster(workers: int, threads: int, gpu: bool = False, env: dict[str, str] | None = None):
    """A Dask cluster on this machine: ``workers`` worker processes with one task thread each and
    ``threads`` torch/OpenMP threads per process; with ``gpu`` the first worker alone has the resource
    ``GPU: 1``. No dashboard, no memory limit (a worker needs what a sequential run needs)."""
    from distributed import Nanny, Scheduler, SpecCluster

    environment = {**thread_environment(threads), **(env or {})}

    def worker(resources: dict[str, float]) -> dict:
        return {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "env": environment,
                                          "resources": resources, "memory_limit": 0, "dashboard": False,
                                          "silence_logs": logging.WARNING}}

    specs = {f"ausynth-worker-{i}": worker({"GPU": 1} if gpu and i == 0 else {}) for i in range(workers)}
    return SpecCluster(scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False,
                                                                "dashboard_address": None}},
                       workers=specs, worker=worker({}), name="ausynth", silence_logs=logging.WARNING)


def check_dask_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds, naming the address, when no Dask scheduler listens at it."""
    parts = urlsplit(address)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            pass
    except OSError as err:
        reason = type(err).__name__ if not str(err) else f"{type(err).__name__}: {err.strerror or err}"
        raise SetupError(f"execution.dask_address {address}: no Dask scheduler answers there ({reason}). Nothing "
                         "was run. Start one (`dask scheduler` on that machine, then `dask worker "
                         f"{address}` on each worker machine), or remove execution.dask_address to run on a "
                         "local cluster.") from None


def prefect_api_url() -> str | None:
    """The Prefect API this process talks to: ``PREFECT_API_URL``, else the temporary (ephemeral) server
    Prefect started for it, if any."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url:
        return str(url)
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.running else None


def uses_gpu(device: str) -> bool:
    from ausynth.tasks.device import resolve_device

    return resolve_device(device).type == "cuda"


@dataclass
class Execution:
    """One run's task runner and the state the DAG's submissions need."""

    settings: ExecutionConfig
    gpu: bool  # the run trains on a GPU
    _order: Iterator[int] = field(default_factory=itertools.count)
    _gpu_resource: bool = False  # dask: GPU tasks ask for the worker resource GPU

    @property
    def kind(self) -> str:
        return self.settings.task_runner

    def task_runner(self):
        """The Prefect task runner for the DAG's subflow."""
        from prefect.task_runners import ThreadPoolTaskRunner

        settings = self.settings
        if settings.task_runner == "sequential":
            return ThreadPoolTaskRunner(max_workers=1)  # unused: Submitter calls each task in the flow's thread
        if settings.task_runner == "threads":
            return ThreadPoolTaskRunner()  # a thread per task; Slots limit how many compute
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address, client_kwargs={"timeout": "30s"})
        api = prefect_api_url()
        env = {"PREFECT_API_URL": api} if api else {}
        return DaskTaskRunner(cluster_class=local_cluster,
                              cluster_kwargs={"workers": settings.workers, "threads": settings.threads(),
                                              "gpu": self.gpu, "env": env})

    @contextlib.contextmanager
    def flow_context(self) -> Iterator[None]:
        """Around the DAG's subflow: on ``dask`` the Prefect API's address travels to the workers with each
        task (a temporary API of this process too: the workers report their task runs there)."""
        if self.kind != "dask":
            yield
            return
        from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

        for name in ("distributed", "distributed.scheduler", "distributed.core", "distributed.nanny",
                     "distributed.worker", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        api = prefect_api_url()
        if get_current_settings().api.url is None and api:
            if self.settings.dask_address and urlsplit(self.settings.dask_address).hostname not in LOOPBACK:
                log.warning("the Prefect API is this process' temporary one (%s), which workers on other machines "
                            "cannot reach: set PREFECT_API_URL to a Prefect server they can reach", api)
            with temporary_settings({PREFECT_API_URL: api}):
                yield
        else:
            yield

    def dag_started(self) -> None:
        """Inside the DAG's subflow, before the first submission: install this run's limits."""
        settings = self.settings
        if self.kind == "threads":
            _CONTROL.set(Control(Slots(settings.workers), Slots(1) if self.gpu else None))
        elif self.kind == "dask":
            from prefect.context import FlowRunContext

            from ausynth.tasks.dask_worker import ProcessSetup

            client = FlowRunContext.get().task_runner.client
            client.register_plugin(ProcessSetup(settings.threads(), logging.getLogger("ausynth").getEffectiveLevel()))
            if self.gpu:
                workers = client.scheduler_info(n_workers=-1)["workers"].values()
                self._gpu_resource = any(w.get("resources", {}).get("GPU") for w in workers)
                if not self._gpu_resource:
                    log.warning("no Dask worker advertises a GPU resource, so GPU tasks are not kept to one at a "
                                "time: start the GPU workers with `dask worker ... --resources GPU=1`")
        log.info("execution: %s%s", settings.describe(),
                 "; GPU training tasks one at a time" if self.gpu else "")


class Submitter:
    """Submits the DAG's tasks, ``submit(task, *args)``, and returns a future (``.result()``); the tasks
    named in ``gpu_tasks`` are the ones that take the GPU one at a time."""

    def __init__(self, execution: Execution, gpu_tasks: Iterable[str] = ()) -> None:
        self.execution, self.gpu_tasks = execution, frozenset(gpu_tasks)
        self.futures: list[Any] = []

    def __call__(self, task, *args: Any, **kwargs: Any):
        ex = self.execution
        priority = next(ex._order)
        if ex.kind == "sequential":
            future: Any = Done(task(*_values(args), **kwargs))
        else:
            token = _PRIORITY.set(priority)  # copied into the task's thread with the context
            try:
                annotations: dict[str, Any] = {"priority": -priority} if ex.kind == "dask" else {}
                if ex.kind == "dask" and ex._gpu_resource and task.name in self.gpu_tasks:
                    annotations["resources"] = {"GPU": 1}
                with _annotate(annotations):
                    future = task.submit(*args, **kwargs)
            finally:
                _PRIORITY.reset(token)
        self.futures.append(future)
        return future

    def wait(self) -> None:
        """Wait for every submitted task; raise the first failure (as it was raised in its task) at once."""
        if self.execution.kind == "sequential":
            return
        from prefect.futures import as_completed

        for future in as_completed([f for f in self.futures if not isinstance(f, Done)]):
            if not future.state.is_completed():
                future.result()  # raises the task's own exception


class Done:
    """A task already run (``sequential``), shaped like a future."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, *args: Any, **kwargs: Any) -> Any:
        return self.value


def _values(args: Iterable[Any]) -> list[Any]:
    return [[_one(v) for v in a] if isinstance(a, list) else _one(a) for a in args]


def _one(value: Any) -> Any:
    return value.value if isinstance(value, Done) else value


def _annotate(annotations: dict[str, Any]):
    if not annotations:
        return contextlib.nullcontext()
    import dask

    return dask.annotate(**annotations)


def execution_for(cfg, check: bool = True) -> Execution:
    """The run's execution; with ``check``, after what must fail before any work (a Dask address nobody
    answers)."""
    settings = cfg.execution
    if check and settings.dask_address:
        check_dask_address(settings.dask_address)
    return Execution(settings, uses_gpu(cfg.device))


def run_in(execution: Execution, dag: Callable, *args: Any) -> Any:
    """Run ``dag`` (a Prefect flow) as a subflow on the execution's task runner."""
    with execution.flow_context():
        return dag.with_options(task_runner=execution.task_runner())(*args)


def effective(cfg):
    """The config the tasks get: execution settings completed from the environment (``AUSYNTH_*``) with the
    threads per task fixed here, on the flow's machine, and the workspace as an absolute path (a worker
    process may run elsewhere)."""
    settings = cfg.execution.with_environment()
    settings = settings.model_copy(update={"threads_per_task": settings.threads()})
    return cfg.model_copy(update={"execution": settings, "workspace": cfg.workspace.resolve()})


def effective_sequential(cfg):
    """``effective`` for a flow whose stages depend on one another (generator training alone): sequential
    whatever the runner, with the threads per task a comparison would use (so it computes the same numbers)."""
    settings = cfg.execution.with_environment()
    settings = settings.model_copy(update={"task_runner": "sequential", "dask_address": None,
                                           "threads_per_task": settings.threads()})
    return cfg.model_copy(update={"execution": settings, "workspace": cfg.workspace.resolve()})
