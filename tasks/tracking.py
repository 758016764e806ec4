"""All MLflow bookkeeping, through one ``Tracker`` that names every run explicitly.

MLflow's 'active run' is thread-local and Prefect may run tasks on worker threads or other
processes, so nothing here relies on it: every call names its run. Stages return tables,
figures and numbers; only this module writes them, batched (``log_batch`` takes at most 1000
metrics and 100 params a call).

Re-running a task never duplicates anything: a (strategy, seed) child run is found again by its
``run_key`` tag under its parent (a complete one is reused as it is, an incomplete one is
replaced), a logged model is recorded on its run and not logged twice, and a model version is
registered once per source run. The registry's ``champion`` alias moves only to a model that
beats its holder on the same test set.

Names follow one scheme: ``test/f1_mean``, ``test/f1/AU3``, ``train/loss`` and ``val/f1`` per
epoch (step = epoch), ``gan/d_loss`` per generator step, ``generated/pass_rate``; the parent
run's comparison ``<strategy>/f1_mean`` (mean over seeds) and ``<strategy>/f1_mean_sd``.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import requests
import torch
import yaml
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from ausynth.configs.schema import ExperimentConfig
from ausynth.tasks.errors import SetupError

log = logging.getLogger("ausynth")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_METRICS, MAX_PARAMS = 1000, 100  # per log_batch call
NOTE = "mlflow.note.content"  # the run description the MLflow UI shows
COMPLETE = "ausynth.complete"
CHAMPION, CHAMPION_METRIC = "champion", "test_score"  # the registry alias, and the score it is awarded on


def tracking_uri(cfg: ExperimentConfig) -> str:
    """The config's tracking store: ``workspace_uri`` of its workspace."""
    return workspace_uri(cfg.workspace)


def workspace_uri(workspace: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file in ``workspace`` (absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(workspace).resolve() / 'mlflow.db'}"


class TrackingUnavailable(SetupError):
    """The MLflow tracking store cannot be used; raised before a flow does any work."""


@contextmanager
def fluent_api_at(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.pytorch``, ``mlflow.models``) pointed at ``uri`` inside the block only.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the environment, so left in place it
    would send every later comparison of this process (another workspace's) to this store.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


@contextmanager
def cpu_prediction() -> Iterator[None]:
    """MLflow's own check of a logged model loads it on CUDA wherever a GPU is visible, but an exported
    program keeps the CPU weights it was traced with and cannot move: inside the block the check (and any
    pyfunc load) uses the CPU, unless ``MLFLOW_DEFAULT_PREDICTION_DEVICE`` already says otherwise."""
    key = "MLFLOW_DEFAULT_PREDICTION_DEVICE"
    if key in os.environ:
        yield
        return
    os.environ[key] = "cpu"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, saying what to do, when the tracking store is unusable.

    An ``http(s)://`` server must answer within ``timeout`` seconds with a status below 500
    (MLflow's own client would retry for minutes, and only at the first logging call); a
    ``sqlite:///`` store's folder must be creatable and writable. Other stores are not checked.
    """
    advice = ("Nothing was run. Start the server (`make serve` starts one on 127.0.0.1:5000), point "
              "MLFLOW_TRACKING_URI at a running one, or unset MLFLOW_TRACKING_URI to log to the local "
              "SQLite store in the workspace (workspace/mlflow.db).")
    if uri.startswith(("http://", "https://")):
        try:
            status = requests.get(uri.rstrip("/") + "/health", timeout=timeout).status_code
        except requests.RequestException as err:
            raise TrackingUnavailable(f"MLflow tracking server {uri} is not reachable "
                                      f"({type(err).__name__}). {advice}") from None
        if status >= 500:
            raise TrackingUnavailable(f"MLflow tracking server {uri} answers HTTP {status}. {advice}")
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingUnavailable(f"MLflow store {uri}: cannot create {folder} ({err})") from None
        if not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"MLflow store {uri}: {folder} is not writable")


def transient(error: BaseException) -> bool:
    """Whether a failure may pass on a second try: I/O with a server, never a config or data error."""
    if isinstance(error, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    return isinstance(error, MlflowException) and error.get_http_status_code() >= 500


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("ausynth", "torch", "torchvision", "prefect", "mlflow", "numpy", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def flatten(mapping: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``section.key`` params, values as strings."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def dataset_tags(cfg: ExperimentConfig) -> dict[str, str]:
    """Tags to filter and group runs by in the MLflow UI; toy sets add difficulty and size."""
    tags = {"dataset": cfg.dataset.kind, "augment_size": str(cfg.augment.size), "config": cfg.name,
            "generator_kind": cfg.generator.kind}
    if cfg.dataset.kind == "toy":
        tags |= {"difficulty": cfg.dataset.difficulty, "labelled": str(cfg.dataset.labelled)}
    return tags


def test_metric_name(key: str, summary: tuple[str, ...]) -> str:
    """``f1_mean`` -> ``test/f1_mean``; ``f1_AU3`` -> ``test/f1/AU3``; a key already named by output keeps
    its name (``pair_fdr/AU2-AU3`` -> ``test/pair_fdr/AU2-AU3``, as the parent run's ``<strategy>/pair_fdr/...``)."""
    metric, sep, output = key.partition("_")
    return f"test/{key}" if key in summary or "/" in key or not sep else f"test/{metric}/{output}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Tracker:
    """Writes a comparison's runs, numbers, tables, figures and models to one MLflow store."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg, self.uri = cfg, tracking_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)

    # ------------------------------------------------------------------ runs

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            return found.experiment_id
        is_local = self.uri.startswith("sqlite:")
        artifacts = (self.cfg.workspace.resolve() / "mlartifacts").as_uri() if is_local else None
        try:
            return self.client.create_experiment(self.cfg.experiment, artifact_location=artifacts)
        except MlflowException:  # a run started at the same moment created it first
            found = self.client.get_experiment_by_name(self.cfg.experiment)
            if found is None:
                raise
            return found.experiment_id

    def close_orphans(self, experiment_id: str) -> None:
        """Mark KILLED the runs this machine left RUNNING in a process that no longer exists (a kill -9)."""
        host = socket.gethostname()
        running = self.client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.host = '{host}'")
        for run in running:
            pid = int(run.data.tags.get("pid", "0") or 0)
            if pid and not _pid_alive(pid):
                log.warning("MLflow run %s was left RUNNING by process %d, which is gone: marked KILLED",
                            run.info.run_id, pid)
                self.client.set_terminated(run.info.run_id, "KILLED")

    def start_parent(self, output_dir: Path, kind: str = "comparison") -> str:
        """A top-level run with the config, seeds, versions and git commit, before any work starts."""
        experiment = self.experiment_id()
        self.close_orphans(experiment)
        commit = git_commit()
        # <time>-<config>-<id>, as the run folder: two runs of one config are told apart at a glance
        tags = {"mlflow.runName": output_dir.name, "ausynth.kind": kind, "mlflow.source.git.commit": commit,
                "output_dir": str(output_dir), "host": socket.gethostname(), "pid": str(os.getpid()),
                **dataset_tags(self.cfg)}
        run_id = self.client.create_run(experiment, tags=tags).info.run_id
        config = self.cfg.model_dump(mode="json")
        params = {**flatten(config), "seeds": ",".join(map(str, self.cfg.seeds)),
                  **{f"version.{k}": v for k, v in versions().items()}}
        self.log_params(run_id, params)
        self.client.log_text(run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")
        return run_id

    def finish(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        self.client.set_terminated(run_id, status, end_time=end_ms)

    def child_run(self, parent_id: str, strategy: str, seed: int, start_ms: int | None = None) -> tuple[str, bool]:
        """The (strategy, seed) run under ``parent_id`` and whether it is already complete.

        A complete run from an earlier try is returned as it is; an incomplete one (a try that died
        half-way) is deleted and started afresh, so a retry leaves exactly one run per (strategy, seed).
        """
        key = f"{strategy}/seed{seed}"
        parent = self.client.get_run(parent_id)
        found = self.client.search_runs([parent.info.experiment_id],
                                        f"tags.mlflow.parentRunId = '{parent_id}' and tags.run_key = '{key}'")
        for run in found:
            if run.data.tags.get(COMPLETE) == "true":
                return run.info.run_id, True
            self.client.delete_run(run.info.run_id)
        tags = {"mlflow.parentRunId": parent_id, "mlflow.runName": f"{strategy}-seed{seed}", "run_key": key,
                "strategy": strategy, "seed": str(seed), "ausynth.kind": "strategy", **dataset_tags(self.cfg)}
        return self.client.create_run(parent.info.experiment_id, start_time=start_ms, tags=tags).info.run_id, False

    def complete(self, run_id: str, end_ms: int | None = None) -> None:
        self.client.set_tag(run_id, COMPLETE, "true")
        self.finish(run_id, "FINISHED", end_ms)

    # ------------------------------------------------------------------ values

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self.log_series(run_id, [(step, metrics)])

    def log_series(self, run_id: str, records: list[tuple[int, dict[str, float]]]) -> None:
        """Metrics at several steps (e.g. every epoch) in as few requests as MLflow allows."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for step, record in records for k, v in record.items()
                 if v is not None and np.isfinite(v)]
        for start in range(0, len(items), MAX_METRICS):
            self.client.log_batch(run_id, metrics=items[start:start + MAX_METRICS])

    def log_params(self, run_id: str, params: dict[str, object]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(run_id, params=items[start:start + MAX_PARAMS])

    def run_url(self, run_id: str) -> str | None:
        """The run's page in the MLflow UI, when the store is a server (a local SQLite store has no URL)."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        experiment = self.client.get_run(run_id).info.experiment_id
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"

    def describe(self, run_id: str, markdown: str) -> None:
        """The run's description (the MLflow UI shows it on the run's overview)."""
        self.client.set_tag(run_id, NOTE, markdown)

    def description(self, run_id: str) -> str:
        return self.client.get_run(run_id).data.tags.get(NOTE, "")

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    # ------------------------------------------------------------------ files

    def log_outputs(self, run_id: str, folder: Path, tables: dict[str, pd.DataFrame],
                    figures: dict[str, Figure], artifact_path: str | None = None) -> None:
        """Write ``tables`` (CSV) and ``figures`` (PNG) into ``folder`` and log them on the run; each table is
        also logged as an MLflow table (JSON), which the UI previews."""
        folder.mkdir(parents=True, exist_ok=True)
        logged = {a.path for a in self.client.list_artifacts(run_id, artifact_path)}
        for name, table in tables.items():
            table.to_csv(folder / f"{name}.csv")
            path = f"{artifact_path}/{name}.json" if artifact_path else f"{name}.json"
            if path not in logged:  # log_table appends to an existing table: a retry would double its rows
                self.client.log_table(run_id, table.reset_index(), path)
        for name, figure in figures.items():
            figure.savefig(folder / f"{name}.png", dpi=110)
        self.log_folder(run_id, folder, artifact_path)

    def log_folder(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def log_classifier(self, run_id: str, model: torch.nn.Module, example: np.ndarray, name: str,
                       metadata: dict) -> str:
        """The classifier as an MLflow model with a signature (float images in, logits out) and ``metadata``
        (what ``ausynth predict`` needs to score new images: ``classifiers.PREDICT_KEYS``); its URI.

        Logged once per run: a second call returns the URI recorded on the run. A finished run keeps its
        status and end time (mlflow.pytorch logs into a reopened run).
        """
        run = self.client.get_run(run_id)
        if run.data.tags.get("model_uri"):
            return run.data.tags["model_uri"]
        model = model.cpu().eval()
        with torch.no_grad():
            output = model(torch.from_numpy(example)).numpy()
        with fluent_api_at(self.uri), cpu_prediction(), mlflow.start_run(run_id=run_id):  # needs an active run
            info = mlflow.pytorch.log_model(model, name=name, signature=infer_signature(example, output),
                                            input_example=example, metadata=metadata,
                                            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        self.client.set_tag(run_id, "model_uri", info.model_uri)
        if run.info.end_time:
            self.finish(run_id, run.info.status, run.info.end_time)
        return info.model_uri

    def register(self, parent_id: str, name: str, run_id: str, model_uri: str, score: float,
                 test_set: str, tags: dict[str, str]) -> str:
        """Register ``model_uri`` under ``name`` once per source run, with ``tags`` and a description; move the
        ``champion`` alias to it only when it beats the holder's ``score`` on the same ``test_set``.

        A smoke run's model thus never displaces a better one; a model scored on another test set
        (another dataset or split) is not comparable and leaves the alias where it is, unless no
        champion exists yet.
        """
        existing = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if existing:
            version = str(existing[0].version)
        else:
            with fluent_api_at(self.uri):
                version = str(mlflow.register_model(model_uri, name).version)
            self.client.update_model_version(name, version, description=(
                f"{tags.get('strategy', '')} classifier of {self.cfg.name}: {CHAMPION_METRIC} {score:.4f} on test "
                f"set {test_set}"))
            for key, value in {**tags, CHAMPION_METRIC: f"{score:.6f}", "test_set": test_set}.items():
                self.client.set_model_version_tag(name, version, key, str(value))
        self._crown_if_better(name, version, score, test_set)
        for run in (parent_id, run_id):
            self.client.set_tag(run, "registered_model", f"{name}/{version}")
        return version

    def _crown_if_better(self, name: str, version: str, score: float, test_set: str, attempts: int = 5) -> None:
        """Move ``champion`` to ``version`` if it beats the holder.

        Two runs finishing together against one tracking server can both find no champion and both
        set the alias; the SQL store then refuses the second insert (a UNIQUE constraint). The loser
        re-reads the holder and tries again, so the better model ends up with the alias either way.
        """
        for attempt in range(attempts):
            if not self._beats_champion(name, score, test_set):
                return
            try:
                self.client.set_registered_model_alias(name, CHAMPION, version)
                return
            except MlflowException:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _beats_champion(self, name: str, score: float, test_set: str) -> bool:
        try:
            holder = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return True  # no champion yet
        if holder.tags.get("test_set") != test_set:
            return False
        return score > float(holder.tags.get(CHAMPION_METRIC, "-inf"))


@contextmanager
def tracked_run(tracker: Tracker, output_dir: Path, kind: str = "comparison") -> Iterator[str]:
    """Open a top-level run; close it FINISHED, FAILED on an error, KILLED on anything else that ends it
    (Ctrl-C, SystemExit from a kill signal, Prefect's own termination signal: BaseExceptions, not errors)."""
    run_id = tracker.start_parent(output_dir, kind)
    try:
        yield run_id
    except Exception:
        tracker.finish(run_id, "FAILED")
        raise
    except BaseException:
        tracker.finish(run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    tracker.finish(run_id, "FINISHED")
