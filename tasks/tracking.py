"""MLflow bookkeeping through ``MlflowClient`` with explicit run ids.

MLflow's 'active run' is thread-local and Prefect may run tasks on worker threads, so nothing
here relies on it: every call names its run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import requests
import torch
import yaml
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from ausynth.configs.schema import ExperimentConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


def tracking_uri(cfg: ExperimentConfig) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file in the workspace (absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{cfg.workspace.resolve() / 'mlflow.db'}"


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be used; raised before a flow does any work."""


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


def client_for(cfg: ExperimentConfig) -> MlflowClient:
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: MlflowClient, cfg: ExperimentConfig) -> str:
    found = client.get_experiment_by_name(cfg.experiment)
    if found is not None:
        return found.experiment_id
    artifacts = (cfg.workspace.resolve() / "mlartifacts").as_uri()
    is_local = tracking_uri(cfg).startswith("sqlite:")
    try:
        return client.create_experiment(cfg.experiment, artifact_location=artifacts if is_local else None)
    except MlflowException:  # a run started at the same moment created it first
        found = client.get_experiment_by_name(cfg.experiment)
        if found is None:
            raise
        return found.experiment_id


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
            "generator": cfg.generator.kind}
    if cfg.dataset.kind == "toy":
        tags |= {"difficulty": cfg.dataset.difficulty, "labelled": str(cfg.dataset.labelled)}
    return tags


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    items = [Metric(k, float(v), 0, step) for k, v in metrics.items()]
    for start in range(0, len(items), MAX_BATCH):
        client.log_batch(run_id, metrics=items[start:start + MAX_BATCH])


def start_run(client: MlflowClient, cfg: ExperimentConfig, output_dir: Path, kind: str = "comparison") -> str:
    """A top-level run: config, seeds, versions and git commit, before any work starts."""
    commit = git_commit()
    tags = {"mlflow.runName": f"{cfg.name}-{kind}", "ausynth.kind": kind, "git_commit": commit,
            "mlflow.source.git.commit": commit, "output_dir": str(output_dir), **dataset_tags(cfg)}
    run = client.create_run(experiment_id(client, cfg), tags=tags)
    config = cfg.model_dump(mode="json")
    params = {**flatten(config), "seeds": ",".join(map(str, cfg.seeds))}
    params.update({f"version.{k}": v for k, v in versions().items()})
    client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
    client.log_text(run.info.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")
    return run.info.run_id


def log_child(client: MlflowClient, cfg: ExperimentConfig, parent_id: str, strategy: str, seed: int,
              metrics: dict[str, float], history: list[dict[str, float]], params: dict[str, str]) -> str:
    """One (strategy, seed) run under the parent, with its per-epoch curve and test metrics."""
    parent = client.get_run(parent_id)
    tags = {"mlflow.parentRunId": parent_id, "mlflow.runName": f"{strategy}-seed{seed}", "strategy": strategy,
            "seed": str(seed), "ausynth.kind": "strategy", **dataset_tags(cfg)}
    run_id = client.create_run(parent.info.experiment_id, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in {"strategy": strategy, "seed": seed, **params}.items()])
    for epoch, record in enumerate(history, start=1):
        log_metrics(client, run_id, {f"epoch_{k}": v for k, v in record.items()}, step=epoch)
    log_metrics(client, run_id, metrics)
    return run_id


def log_classifier(run_id: str, model: torch.nn.Module, example: np.ndarray) -> str:
    """Log the classifier as an MLflow model with a signature (float images in, AU logits out).

    Returns the model URI. The run is opened and closed in this thread (active runs are per thread).
    """
    model = model.cpu().eval()
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(model, name="model", signature=infer_signature(example, output),
                                        input_example=example,
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    return info.model_uri


def register_best(client: MlflowClient, parent_id: str, name: str, candidates: dict[str, tuple[float, str]]) -> str:
    """Register the model with the highest score in the registry; tag the parent with the choice.

    ``candidates`` maps a child run id to (score, model URI).
    """
    best_run = max(candidates, key=lambda run: candidates[run][0])
    version = mlflow.register_model(candidates[best_run][1], name)
    client.set_tag(parent_id, "registered_model", f"{name}/{version.version}")
    client.set_tag(best_run, "registered_model", f"{name}/{version.version}")
    return version.version


@contextmanager
def tracked_run(cfg: ExperimentConfig, output_dir: Path, kind: str = "comparison") -> Iterator[tuple[MlflowClient, str]]:
    """Open a top-level run; close it FINISHED, or FAILED if the block raises."""
    client = client_for(cfg)
    run_id = start_run(client, cfg, output_dir, kind)
    try:
        yield client, run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")



def generator_logger(client: MlflowClient, run_id: str):
    """A training callback that puts the generator's losses and sample grids on a run."""
    def on_log(step: int, metrics: dict[str, float], image: Path | None) -> None:
        log_metrics(client, run_id, {f"generator.{k}": v for k, v in metrics.items()}, step=step)
        if image is not None:
            client.log_artifact(run_id, str(image), "generator/samples")
    return on_log


def log_generated(client: MlflowClient, run_id: str, folder: Path) -> dict:
    """The AU-isolated images' quality table, example grid and summary figures."""
    summary = json.loads((folder / "summary.json").read_text())
    log_metrics(client, run_id, {f"generated.{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
    client.set_tag(run_id, "generator_checkpoint", summary["checkpoint"])
    for name in ("quality.csv", "examples.png", "summary.json"):
        client.log_artifact(run_id, str(folder / name), "generated")
    return summary
