"""Generator training alone (e.g. on a GPU machine); a later comparison uses its checkpoint
with ``--set generator.checkpoint=<path>``."""

from __future__ import annotations

from prefect import flow

from ausynth.configs.loader import load_for_run
from ausynth.flows.form import ConfigName
from ausynth.tasks import prefect_tasks as t
from ausynth.tasks.execution import effective_sequential
from ausynth.tasks.outputs import new_output_dir
from ausynth.tasks.strategies import BASELINE
from ausynth.tasks.tracking import Tracker, check_tracking, tracked_run


@flow(name="ausynth-train-generator", log_prints=True)
def train_generator_flow(config: ConfigName = "toy-quick", overrides: list[str] = []) -> str:  # noqa: B006
    """Train (or resume) the config's generator on labelled + pseudo-labelled images; returns its checkpoint.

    Its stages depend on one another, so they run one after another in the flow's process whatever
    ``execution.task_runner`` says, each with the threads per task of ``execution`` (the numbers are then
    those a comparison with the same settings computes).

    Args:
        config: a built-in config, or the path of a YAML file on the machine that runs the flow
        overrides: any other setting as dotted.key=value, e.g. generator.steps=20000
    """
    cfg = effective_sequential(load_for_run(config, overrides))
    tracker = Tracker(cfg)
    check_tracking(tracker.uri)
    with tracked_run(tracker, new_output_dir(cfg), kind="generator") as run_id:
        dataset = t.dataset_task(cfg)
        teacher = t.classifier_task(cfg, BASELINE.name, cfg.seeds[0], dataset)
        generator = t.generator_task(cfg, dataset, t.pool_scores_task(cfg, dataset, teacher), run_id)
    print(f"generator checkpoint: {generator.path}\n"
          f"use it with: ausynth run {config} --set generator.checkpoint={generator.path}")
    return str(generator.path)
