"""Per-run output folders that never collide: a second run never clobbers the first."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ausynth.configs.schema import ExperimentConfig
from ausynth.tasks.errors import SetupError


def check_workspace(path: Path) -> None:
    """Refuse, before any work, a workspace that is a file or that this user cannot write.

    Without this check such a workspace surfaces as an MLflow store error (its SQLite file lives
    there) or half-way through a run. Nothing is created: the nearest existing folder on the
    path must be writable, so ``ausynth validate`` leaves no trace.
    """
    path = Path(path).resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise SetupError(f"workspace {path} {what}, not a folder; set workspace: to a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is a read-only folder" if existing == path else f"cannot be created: {existing} is read-only"
        raise SetupError(f"workspace {path} {what} for this user; set workspace: to a folder you can write to")


def new_output_dir(cfg: ExperimentConfig) -> Path:
    """``workspace/runs/<utc time>-<config name>-<random>/`` holding the run's config."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = cfg.workspace.resolve() / "runs" / f"{stamp}-{cfg.name}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return folder
