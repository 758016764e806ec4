"""``generator.checkpoint``: the comparison uses exactly the file named, and refuses, before any
classifier trains, one made for other networks or images, or a damaged one.

(It used to load ``generator.pt`` from the named file's folder, and skipped the architecture check.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from ausynth.configs.loader import load_config
from ausynth.flows import cli
from ausynth.flows.compare import compare_strategies
from ausynth.flows.train_generator import train_generator_flow
from ausynth.tasks import datasets
from ausynth.tasks.checkpoint import read_checkpoint
from ausynth.tasks.gan_training import CHECKPOINT, train_gan
from ausynth.tasks.imageset import ImageSet

from conftest import TINY

pytestmark = pytest.mark.slow

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Checkpoints that fit the tiny config, and some that do not.

    ``x/generator.pt`` (2 steps, by ``ausynth train-generator``'s flow) and ``x/chosen.pt`` (4 steps)
    fit the tiny config; ``alone/my.pt`` is ``chosen.pt`` in a folder of its own;
    ``wide/generator.pt`` has base_channels 8; ``small/generator.pt`` was trained on 32x32 images;
    ``cut/cut.pt`` is ``chosen.pt`` cut short.
    """
    root = tmp_path_factory.mktemp("checkpoints")
    trained = Path(train_generator_flow("toy-quick", [*TINY, f"workspace={root / 'ws'}", "generator.steps=2"]))
    assert trained.parent.parent == root / "ws" / "store" / "generators" and trained.name == CHECKPOINT
    (root / "x").mkdir()
    shutil.copy(trained, root / "x" / CHECKPOINT)
    cfg = load_config("toy-quick", [*TINY, f"workspace={root / 'ws'}"])
    train, _ = datasets.train_val(datasets.load_set(datasets.prepare_dataset(cfg), "labelled"))
    generator = cfg.generator

    def train_into(folder: str, data: ImageSet = train, **settings) -> Path:
        train_gan(data, generator.model_copy(update=settings), 0, CPU, root / folder)
        return root / folder / CHECKPOINT

    shutil.copy(train_into("four", steps=4), root / "x" / "chosen.pt")
    (root / "alone").mkdir()
    shutil.copy(root / "x" / "chosen.pt", root / "alone" / "my.pt")
    train_into("wide", steps=1, base_channels=8)
    small = ImageSet(np.ascontiguousarray(train.images[:16, :32, :32]), train.frame.head(16).copy(),
                     list(train.label_columns), dict(train.meta))
    train_into("small", small, steps=1)
    (root / "cut").mkdir()
    whole = (root / "x" / "chosen.pt").read_bytes()
    (root / "cut" / "cut.pt").write_bytes(whole[: len(whole) // 3])
    return root


def overrides(workspace: Path, checkpoint: Path) -> list[str]:
    return [*TINY, "strategies=[generator]", f"workspace={workspace}", f"generator.checkpoint={checkpoint}"]


def generated_summaries(workspace: Path) -> dict[str, dict]:
    """The generated-images entries' summaries, by the checkpoint each was made with."""
    found = [json.loads(p.read_text()) for p in (workspace / "store" / "generated").glob("*/summary.json")]
    return {summary["checkpoint"]: summary for summary in found}


def test_the_run_uses_exactly_the_named_file_not_its_folders_generator_pt(made):
    chosen = made / "x" / "chosen.pt"
    assert read_checkpoint(made / "x" / CHECKPOINT)["step"] == 2 and read_checkpoint(chosen)["step"] == 4
    workspace = made / "ws"  # where train_generator_flow left the dataset, the teacher and a generator
    generators = sorted((workspace / "store" / "generators").iterdir())
    result = compare_strategies("toy-quick", overrides=overrides(workspace, chosen))
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and list(result.table.index) == ["generator"]
    assert parent.data.tags["generator_checkpoint"] == str(chosen.resolve())
    summary = generated_summaries(workspace)[str(chosen.resolve())]
    assert summary["generator_step"] == 4
    assert str((made / "x" / CHECKPOINT).resolve()) not in generated_summaries(workspace)
    logged = Path(client.download_artifacts(result.parent_run_id, "generated/summary.json", str(made / "dl")))
    assert json.loads(logged.read_text())["checkpoint"] == str(chosen.resolve())
    assert parent.data.metrics["generated/generator_step"] == 4
    assert sorted((workspace / "store" / "generators").iterdir()) == generators  # nothing trained instead


def test_a_checkpoint_alone_in_its_folder_works(made):
    mine = made / "alone" / "my.pt"
    result = compare_strategies("toy-quick", overrides=overrides(made / "ws", mine))
    parent = MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["generator_checkpoint"] == str(mine.resolve())
    assert generated_summaries(made / "ws")[str(mine.resolve())]["generator_step"] == 4
    assert pd.read_csv(Path(result.output_dir) / "comparison.csv", index_col=0).index.tolist() == ["generator"]


def refused(made: Path, workspace: Path, checkpoint: Path, capsys) -> str:
    """Run the comparison as a user does (``ausynth run``); return what it printed on stderr."""
    code = cli.main(["run", "toy-quick", *[arg for o in overrides(workspace, checkpoint) for arg in ("--set", o)]])
    err = capsys.readouterr().err
    assert code == 1, err
    assert not list((workspace / "store").glob("classifiers/*")), "a classifier was trained before the refusal"
    assert not (workspace / "store" / "generated").exists()
    return " ".join(err.split())  # the console may wrap long lines


@pytest.mark.parametrize("folder, differs, expected, found", [
    ("wide", "base_channels", "base_channels 4", "base_channels 8"),
    ("small", "image_shape", "96x96x1 images", "32x32x1 images"),
])
def test_a_checkpoint_for_other_networks_is_refused_before_any_training(made, tmp_path, capsys, folder, differs,
                                                                        expected, found):
    path = made / folder / CHECKPOINT
    message = refused(made, tmp_path / "ws", path, capsys)
    assert f"generator checkpoint {path} does not fit (differs in {differs}):" in message
    wanted, seen = message.split("expected:")[1].split("found:")
    assert expected in wanted and found not in wanted  # both architectures, each on its side
    assert found in seen and expected not in seen
    assert "Traceback" not in message


def test_a_truncated_checkpoint_is_refused_naming_the_file(made, tmp_path, capsys):
    path = made / "cut" / "cut.pt"
    message = refused(made, tmp_path / "ws", path, capsys)
    assert f"generator checkpoint {path} cannot be read" in message
    assert "Traceback" not in message
