"""Dataset preparation alone: build (or reuse) a config's image sets in the store."""

from __future__ import annotations

from prefect import flow

from ausynth.configs.loader import load_for_run
from ausynth.flows.form import ConfigName
from ausynth.tasks import prefect_tasks as t
from ausynth.tasks.datasets import IMAGE_SETS, load_set


@flow(name="ausynth-prepare-dataset", log_prints=True)
def prepare_dataset_flow(config: ConfigName = "toy-quick", overrides: list[str] = []) -> str:  # noqa: B006
    """Returns the folder holding the labelled, unlabelled and test image sets (of a face dataset that is an
    unlabelled pool alone: its crops only).

    Args:
        config: a built-in config, or the path of a YAML file on the machine that runs the flow
        overrides: any other setting as dotted.key=value, e.g. dataset.labelled=500
    """
    dataset = t.dataset_task(load_for_run(config, overrides, needs_labels=False))
    counts = ", ".join(f"{name} {len(load_set(dataset, name, mmap=True))}" for name in IMAGE_SETS
                       if (dataset.path / name).is_dir())
    print(f"dataset ready in {dataset.path} ({counts} images)")
    return str(dataset.path)
