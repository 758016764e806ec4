"""Score face images with a trained classifier: ``ausynth predict``, with OpenFace's CSV columns.

A classifier comes from the MLflow model registry (``name``, ``name@alias``, ``name/version``;
a bare name means its ``champion``) or from the store (a ``store/classifiers/<key>/`` folder, or
its ``model.pt``). Either way it carries what its training images were (``classifiers.
input_record``: crop size, channels, the detection backend and multi-face policy, the threshold),
so new images are detected, aligned and cropped by ``detect.detect_and_crop`` exactly as those
were, and a model never sees an image of another size or framing.

The CSV has a row per listed image, in order: ``file`` (as listed), ``face`` (0, the face scored;
empty when none), ``success`` (1/0, as OpenFace), the detection report (``status``, ``faces``,
``alignment``, ``reason``) and the label type's prediction columns (``LabelType.output_columns``:
``AU01_p``/``AU01_c`` for AU presence). An image that gives no crop keeps its row, with its reason
and empty predictions; the file is written atomically.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ausynth.configs.faces import DetectionConfig
from ausynth.tasks import classifiers, ingest, label_types
from ausynth.tasks.detect import detect_and_crop
from ausynth.tasks.device import resolve_device
from ausynth.tasks.errors import DataError, UserError
from ausynth.tasks.store import StoredItem
from ausynth.tasks.tracking import CHAMPION, check_tracking, fluent_api_at
from ausynth.tasks.train_classifier import scale, to_tensor

REPORT = ["status", "faces", "alignment", "reason"]


class ModelError(UserError):
    """A model that cannot be found, or that does not say what images it takes."""


@dataclass
class Classifier:
    """A trained classifier ready to score (in evaluation mode) and what it needs to know to do so."""

    net: torch.nn.Module
    label_columns: list[str]
    label_type: str
    input: dict  # classifiers.input_record: image_shape, detection, threshold
    name: str  # where it came from, for messages
    device: torch.device


def _record(found: dict, where: str, retrain: str) -> dict:
    """The ``PREDICT_KEYS`` of an info.json or an MLflow model's metadata; an error when they are missing."""
    missing = [key for key in classifiers.PREDICT_KEYS if key not in (found or {})]
    if missing:
        raise ModelError(f"{where} does not record the images it was trained on ({', '.join(missing)} missing): "
                         f"it was trained by an older ausynth. {retrain}")
    return {key: found[key] for key in classifiers.PREDICT_KEYS}


def from_store(path: Path) -> Classifier:
    """A classifier folder of the store (``model.pt`` and ``info.json``), or its ``model.pt``."""
    folder = path.parent if path.is_file() else path
    if not (folder / classifiers.INFO).is_file() or not (folder / classifiers.WEIGHTS).is_file():
        raise ModelError(f"{path} is not a trained classifier: a classifier is a store folder holding "
                         f"{classifiers.WEIGHTS} and {classifiers.INFO} (workspace/store/classifiers/<key>/; a "
                         "comparison's child run names its own in the model_dir tag)")
    info = json.loads((folder / classifiers.INFO).read_text())
    record = _record(info, str(folder), f"Delete {folder} and run its comparison again to retrain it.")
    device = resolve_device("auto")
    net = classifiers.load_classifier(StoredItem(folder, folder.name), device).eval()
    return Classifier(net, **record, name=str(folder), device=device)


def parse_model_name(text: str) -> tuple[str, str | None, str | None]:
    """``name``, ``name@alias``, ``name/version`` (``models:/`` optional) -> (name, alias, version)."""
    text = text.removeprefix("models:/")
    if "@" in text:
        name, alias = text.rsplit("@", 1)
        return name, alias, None
    name, _, version = text.rpartition("/")
    if name and version.isdigit():
        return name, None, version
    return text, CHAMPION, None


def _check_store(uri: str) -> None:
    """A SQLite store that is not there is an error, not an empty store created on the spot."""
    path = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not path.is_file():
        raise ModelError(f"no MLflow store at {path}: run a comparison first (`ausynth run <config>`), point "
                         "--tracking-uri (or MLFLOW_TRACKING_URI) at the store that registered the model, or give "
                         "a store folder (workspace/store/classifiers/<key>/) as --model")
    check_tracking(uri)


def _not_registered(client: MlflowClient, name: str, alias: str | None, version: str | None, uri: str) -> str:
    """What is missing in the registry, and what is there instead."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = [m.name for m in client.search_registered_models(max_results=20)]
        there = f"registered models: {', '.join(names)}" if names else "it has no registered model"
        path = f", and no file or folder {name} exists" if "/" in name else ""
        return f"no registered model {name!r} in {uri} ({there}){path}; give one of those names, or a store folder"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    aliases = ", ".join(f"{a} -> version {v}" for a, v in model.aliases.items()) or "none"
    asked = f"alias {alias!r}" if alias else f"version {version}"
    return (f"registered model {name!r} has no {asked} (its aliases: {aliases}; its versions: "
            f"{', '.join(map(str, versions)) or 'none'}); use {name}@<alias> or {name}/<version>")


def from_registry(text: str, uri: str) -> Classifier:
    """A registered model by name and alias (or version), with the metadata its comparison logged."""
    _check_store(uri)
    name, alias, version = parse_model_name(text)
    client = MlflowClient(tracking_uri=uri)
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        raise ModelError(_not_registered(client, name, alias, version, uri)) from None
    where = f"registered model {name} version {found.version}"
    model_uri = f"models:/{name}/{found.version}"
    # The registry holds programs exported with torch.export from the CPU: their weights stay where they were
    # traced (MLflow refuses to move them), so they score on the CPU on a GPU machine too.
    device = torch.device("cpu")
    with fluent_api_at(uri):
        record = _record(mlflow.models.get_model_info(model_uri).metadata, where,
                         f"Run its comparison again and give the version it registers ({name}/<version>): "
                         "the alias moves only to a model that scores better.")
        net = mlflow.pytorch.load_model(model_uri, map_location=device)  # exported in evaluation mode
    return Classifier(net, **record, name=where, device=device)


def load(model: str, tracking_uri: str) -> Classifier:
    """A store path when ``model`` is one on disk, else a registered model's name."""
    path = Path(model)
    return from_store(path) if path.exists() else from_registry(model, tracking_uri)


def list_images(source: Path) -> pd.DataFrame:
    """``file`` as listed and absolute ``path``: every image under a folder (sorted, sub-folders too), or the
    rows of a CSV manifest (its path column; relative paths from the manifest's folder)."""
    if source.is_dir():
        raw = ingest.read_folder(source, None)
    elif source.is_file():
        raw = ingest.read_manifest(source, None, None)
    else:
        raise DataError(f"{source} does not exist: give a folder of images or a CSV manifest with a path column")
    return pd.DataFrame({"file": raw["path"].astype(str).to_numpy(), "path": raw[ingest.FILE].to_numpy()})


def detection_for(classifier: Classifier, backend: str | None, cache_dir: Path) -> DetectionConfig:
    """The classifier's own crop settings; only the backend may be changed (e.g. ``none`` for ready crops)."""
    settings = {**classifier.input["detection"], **({"backend": backend} if backend else {})}
    return DetectionConfig(**settings, cache_dir=cache_dir)


@torch.no_grad()
def score(classifier: Classifier, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The label type's predictions (N, K) for uint8 crops; the model is already in evaluation mode
    (an exported MLflow model cannot be switched)."""
    kind = label_types.label_type(classifier.label_type)
    data = to_tensor(images, classifier.device)
    outputs = [classifier.net(scale(data[i:i + batch_size])).cpu() for i in range(0, len(data), batch_size)]
    return kind.activate(torch.cat(outputs)).numpy() if outputs else np.zeros((0, len(classifier.label_columns)))


def predict(images: pd.DataFrame, classifier: Classifier, detection: DetectionConfig) -> pd.DataFrame:
    """A row per image of ``images`` (``list_images``): detection report and predictions, OpenFace-style."""
    crops, report = detect_and_crop(images[["path"]], [], detection, detection.cache_dir)
    kind = label_types.label_type(classifier.label_type)
    predicted = kind.output_columns(score(classifier, crops.images), classifier.label_columns,
                                    classifier.input["threshold"])
    ok = report["cropped"].to_numpy()
    table = pd.DataFrame({"file": images["file"].to_numpy(),
                          "face": pd.array(np.where(ok, 0, None), dtype="Int64"),
                          "success": ok.astype(int)})
    table[REPORT] = report[REPORT].to_numpy()
    predicted.index = np.flatnonzero(ok)
    table = table.join(predicted)
    binary = [c for c in predicted.columns if c.endswith("_c")]
    return table.astype({c: "Int64" for c in binary})


def write_csv(table: pd.DataFrame, out: Path) -> Path:
    """Write atomically: a reader (or a killed run) never sees half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        table.to_csv(tmp, index=False, float_format="%.6g")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
