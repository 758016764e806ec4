"""Dataset preparation alone: build (or reuse) a config's image sets in the store."""

from __future__ import annotations

from prefect import flow

from ausynth.configs.loader import load_for_run
from ausynth.tasks import prefect_tasks as t
from ausynth.tasks.datasets import IMAGE_SETS, load_set


@flow(name="ausynth-prepare-dataset", log_prints=True)
def prepare_dataset_flow(config: str = "toy-quick", overrides: list[str] | None = None) -> str:
    """Returns the folder holding the labelled, unlabelled and test image sets (of a face dataset that is an
    unlabelled pool alone: its crops only)."""
    dataset = t.dataset_task(load_for_run(config, overrides or [], needs_labels=False))
    counts = ", ".join(f"{name} {len(load_set(dataset, name, mmap=True))}" for name in IMAGE_SETS
                       if (dataset.path / name).is_dir())
    print(f"dataset ready in {dataset.path} ({counts} images)")
    return str(dataset.path)
