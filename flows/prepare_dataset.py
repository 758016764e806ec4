"""Dataset preparation alone: build (or reuse) a config's image sets in the store."""

from __future__ import annotations

from prefect import flow

from ausynth.configs.loader import load_for_run
from ausynth.tasks import prefect_tasks as t


@flow(name="ausynth-prepare-dataset", log_prints=True)
def prepare_dataset_flow(config: str = "toy-quick", overrides: list[str] | None = None) -> str:
    """Returns the folder holding the labelled, unlabelled and test image sets."""
    dataset = t.dataset_task(load_for_run(config, overrides or []))
    print(f"dataset ready in {dataset.path}")
    return str(dataset.path)
