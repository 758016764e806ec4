"""How a comparison's tasks are executed: one after another, on threads, or on a Dask cluster.

None of these settings changes a result: every task is seeded by its own (strategy, seed) and
every stage is a store entry keyed by what determines it, so the comparison table, the store and
the MLflow child runs are the same whichever runner runs them. They decide only how fast a run is
and how it shares the machine.

A setting not given in the config (nor with ``--set``) may come from the environment of the
process that runs the flow, which suits what belongs to a machine rather than to an experiment
(a Docker worker's cores, a cluster's address): ``AUSYNTH_TASK_RUNNER``, ``AUSYNTH_WORKERS``,
``AUSYNTH_THREADS_PER_TASK`` and ``AUSYNTH_DASK_ADDRESS``. A value in the config always wins.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, ValidationError, field_validator, model_validator

from ausynth.configs.section import Section
from ausynth.tasks.errors import ConfigError

TaskRunner = Literal["sequential", "threads", "dask"]
ADDRESS = re.compile(r"^(tcp|tls)://[^\s:/]+:\d{1,5}$")
ENVIRONMENT = {"task_runner": "AUSYNTH_TASK_RUNNER", "workers": "AUSYNTH_WORKERS",
               "threads_per_task": "AUSYNTH_THREADS_PER_TASK", "dask_address": "AUSYNTH_DASK_ADDRESS"}


def available_cores() -> int:
    """CPU cores this process may use: its CPU affinity, further capped by a cgroup (v2) CPU quota
    (a container limited with ``--cpus``), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class ExecutionConfig(Section):
    """``task_runner``: ``sequential`` runs the tasks one after another in the flow's process, in
    the DAG's order; ``threads`` runs up to ``workers`` tasks at once on threads of that process
    (Prefect's ThreadPoolTaskRunner); ``dask`` runs them on a Dask cluster (prefect-dask's
    DaskTaskRunner): by default a local cluster of ``workers`` single-threaded worker processes,
    or the existing cluster whose scheduler is at ``dask_address``.

    ``threads_per_task``: the torch / OpenMP / MKL threads each task may use; by default the
    machine's cores divided by ``workers``, so that concurrent tasks never ask for more threads
    than there are cores (oversubscription makes OpenMP threads spin against each other and can
    slow training down 20-40x). The default is the same for every runner, ``sequential`` too,
    because torch's results depend (in the last digits) on the thread count: with the same
    ``workers`` and ``threads_per_task``, every runner computes the very same numbers.

    The default is ``threads``: it computes exactly what ``sequential`` computes
    (``tests/test_execution.py``) and keeps every core busy while the DAG has independent tasks,
    with no worker processes to start.
    """

    task_runner: TaskRunner = "threads"
    workers: Annotated[int, Field(ge=1, le=256)] = 2
    threads_per_task: PositiveInt | None = None
    dask_address: str | None = None

    @field_validator("dask_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not ADDRESS.match(value):
            raise ValueError(f"{value!r} is not a Dask scheduler address: use tcp://host:port (or tls://host:port), "
                             "e.g. tcp://10.0.0.5:8786 as printed by `dask scheduler`")
        return value

    @model_validator(mode="before")
    @classmethod
    def _address_implies_dask(cls, values):
        """A scheduler address without a task runner means: run on that cluster."""
        if isinstance(values, dict) and values.get("dask_address") and "task_runner" not in values:
            return {**values, "task_runner": "dask"}
        return values

    @model_validator(mode="after")
    def _address_needs_dask(self) -> "ExecutionConfig":
        if self.dask_address is not None and self.task_runner != "dask":
            raise ValueError(f"dask_address is set but task_runner is {self.task_runner!r}: set task_runner: dask "
                             "to run on that cluster, or remove dask_address")
        return self

    def threads(self, cores: int | None = None) -> int:
        """Threads per task: ``threads_per_task``, else cores // ``workers``, at least 1."""
        if self.threads_per_task is not None:
            return self.threads_per_task
        return max(1, (cores or available_cores()) // self.workers)

    def describe(self) -> str:
        where = {"sequential": "one task at a time", "threads": f"up to {self.workers} tasks at once on threads",
                 "dask": (f"the Dask cluster at {self.dask_address}" if self.dask_address
                          else f"a local Dask cluster of {self.workers} worker processes")}[self.task_runner]
        return f"{self.task_runner} ({where}), {self.threads()} torch thread(s) per task"

    def with_environment(self, environ: dict[str, str] | None = None) -> "ExecutionConfig":
        """These settings, with ``AUSYNTH_*`` environment variables filling the keys the config did not set."""
        environ = os.environ if environ is None else environ
        given = {key: environ[name] for key, name in ENVIRONMENT.items()
                 if key not in self.model_fields_set and environ.get(name, "").strip()}
        if not given:
            return self
        try:
            merged = type(self).model_validate({**self.model_dump(include=self.model_fields_set), **given})
        except ValidationError as err:
            names = ", ".join(f"{ENVIRONMENT[k]}={v}" for k, v in given.items())
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"execution settings from the environment ({names}) are invalid: {problems}") from None
        return merged
