"""Generator training alone (e.g. on a GPU machine); a later comparison uses its checkpoint
with ``--set generator.checkpoint=<path>``."""

from __future__ import annotations

from prefect import flow

from ausynth.configs.loader import load_config
from ausynth.tasks import prefect_tasks as t
from ausynth.tasks.outputs import new_output_dir
from ausynth.tasks.tracking import check_tracking, tracked_run, tracking_uri
from ausynth.tasks.train_generator import CHECKPOINT


@flow(name="ausynth-train-generator", log_prints=True)
def train_generator(config: str = "toy-quick", overrides: list[str] | None = None) -> str:
    """Train (or resume) the config's generator on labelled + pseudo-labelled images; returns its checkpoint."""
    cfg = load_config(config, overrides or [])
    check_tracking(tracking_uri(cfg))
    with tracked_run(cfg, new_output_dir(cfg), kind="generator") as (_, run_id):
        dataset = t.build_dataset(cfg)
        teacher = t.train_classifier(cfg, dataset, "supervised", cfg.seeds[0])
        generator = t.train_generator(cfg, dataset, teacher, run_id)
    checkpoint = str(generator.path / CHECKPOINT)
    print(f"generator checkpoint: {checkpoint}\nuse it with: ausynth run {config} --set generator.checkpoint={checkpoint}")
    return checkpoint
