"""What a Dask worker process needs before it runs an ausynth task (imported only with ``task_runner: dask``)."""

from __future__ import annotations

import logging

from distributed import WorkerPlugin

from ausynth.tasks.device import use_threads


class ProcessSetup(WorkerPlugin):
    """The torch/OpenMP threads per task and the ``ausynth`` log level of the flow's process, set in every
    worker of the cluster (those that join later too) before it runs a task; the stages' modules are
    imported then too, so that no worker starts its first task seconds after the others."""

    name = "ausynth-process-setup"

    def __init__(self, threads: int, log_level: int) -> None:
        self.threads, self.log_level = threads, log_level

    def setup(self, worker) -> None:
        use_threads(self.threads)
        logging.getLogger("ausynth").setLevel(self.log_level)
        import ausynth.tasks.prefect_tasks  # noqa: F401  (torch, MLflow, the stages: loaded before the first task)
