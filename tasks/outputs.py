"""Per-run output folders that never collide: a second run never clobbers the first."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ausynth.configs.schema import ExperimentConfig


def new_output_dir(cfg: ExperimentConfig) -> Path:
    """``workspace/runs/<utc time>-<config name>-<random>/`` holding the run's config."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = cfg.workspace.resolve() / "runs" / f"{stamp}-{cfg.name}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return folder
