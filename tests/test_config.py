"""Configs: loading, merging, and every way a config can be refused, as the user meets it (``ausynth``)."""

import os
from pathlib import Path

import pytest
import torch
import yaml

from ausynth.configs.loader import ConfigError, load_config
from ausynth.flows.cli import main

SCREEN = 15  # an error must fit on a screen: no traceback, no repeated lines


def write(tmp_path: Path, text: str | bytes, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and everything printed; fails when the output would not fit on a screen."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert len(text.splitlines()) <= SCREEN, text
    assert "Traceback" not in text
    return code, text


def test_builtin_configs_all_validate():
    for name in ("toy-quick", "toy-paper", "toy-paper-3k-medium", "toy-paper-3k-hard", "toy-paper-30k-medium",
                 "toy-paper-30k-hard"):
        cfg = load_config(name)
        assert cfg.name == name
    paper = load_config("toy-paper-30k-hard")
    assert (paper.dataset.labelled, paper.dataset.difficulty, paper.augment.size) == (30000, "hard", 90000)
    assert (paper.classifier.batch_size, paper.classifier.patience, paper.classifier.loss) == (100, 20, "mse")
    assert paper.seeds == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("text, named", [
    ("clasifier: {lr: 0.1}\n", "clasifier"),
    ("classifier: {lrate: 0.1}\n", "classifier.lrate"),
    ("classifier: {batch_size: many}\n", "classifier.batch_size"),
    ("dataset: {labelled: -5}\n", "dataset.labelled"),
    ("strategies: [supervised, mixup]\n", "strategies"),
    ("seeds: []\n", "seeds"),
    ("seeds: [0, 4294967296]\n", "seeds.1"),  # numpy seeds stop at 2**32-1
    ("seeds: [-1]\n", "seeds.0"),
    ("dataset: {seed: 4294967296}\n", "dataset.seed"),
])
def test_bad_keys_and_values_are_named(tmp_path, text, named):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert named in str(err.value) and "exp.yaml" in str(err.value)


def test_overrides_and_extends(tmp_path):
    write(tmp_path, "seeds: [1, 2]\nclassifier: {lr: 0.01, patience: 3}\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nclassifier: {patience: 7}\n")
    cfg = load_config(child, ["classifier.max_epochs=5", "strategies=[supervised]"])
    assert (cfg.classifier.lr, cfg.classifier.patience, cfg.classifier.max_epochs) == (0.01, 7, 5)
    assert cfg.seeds == [1, 2] and cfg.strategies == ["supervised"]
    with pytest.raises(ConfigError, match="key=value"):
        load_config(child, ["classifier.max_epochs"])


def test_pool_smaller_than_augment_size_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="augment.size"):
        load_config("toy-quick", ["dataset.unlabelled=10", "augment.size=50"])


# --- through the command, as a user meets them: exit code, the file or key named, one screen ---

def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = write(tmp_path, "strategies: [supervised, nonsense]\n")
    assert cli(capsys, "run", bad, "--set", f"workspace={tmp_path / 'ws'}")[0] == 2
    code, text = cli(capsys, "run", tmp_path / "missing.yaml")
    assert code == 2 and "missing.yaml" in text and "does not exist" in text
    code, text = cli(capsys, "run", "toy-quick", "--set", "dataset.labelled=-1")
    assert code == 2 and "dataset.labelled" in text and "--debug" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_cli_malformed_yaml_names_file_and_line(tmp_path, capsys):
    code, text = cli(capsys, "validate", write(tmp_path, "dataset: [unclosed\n"))
    assert code == 2 and "exp.yaml: malformed YAML at line 2" in text


def test_cli_empty_file_is_an_error_not_the_defaults(tmp_path, capsys):
    code, text = cli(capsys, "validate", write(tmp_path, "# nothing but a comment\n"))
    assert code == 2 and "exp.yaml is empty" in text


def test_cli_file_not_utf8_is_named(tmp_path, capsys):
    code, text = cli(capsys, "validate", write(tmp_path, "name: caf\xe9\n".encode("latin-1")))
    assert code == 2 and "exp.yaml: not UTF-8" in text


def test_cli_seed_beyond_numpy_range(tmp_path, capsys):
    code, text = cli(capsys, "run", "toy-quick", "--set", "seeds=[4294967296]")
    assert code == 2 and "seeds.0" in text and "4294967295" in text


def test_cli_malformed_parent_names_parent_and_child(tmp_path, capsys):
    write(tmp_path, "classifier: {lr: 0.1\n", "parent.yaml")
    code, text = cli(capsys, "validate", write(tmp_path, "extends: parent.yaml\nseeds: [1]\n", "my.yaml"))
    assert code == 2 and "parent.yaml (extended by" in text and "my.yaml): malformed YAML" in text


def test_cli_bad_key_from_parent_names_key_and_parent(tmp_path, capsys):
    write(tmp_path, "classifier: {lrate: 0.1}\n", "parent.yaml")
    code, text = cli(capsys, "validate", write(tmp_path, "extends: parent.yaml\nseeds: [1]\n", "my.yaml"))
    assert code == 2 and "classifier.lrate" in text and "parent.yaml (extended by" in text


def test_cli_cuda_without_gpu_names_device(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, text = cli(capsys, "run", "toy-quick", "--set", "device=cuda")
    assert code == 2 and "device is 'cuda'" in text and "use device: auto" in text
    code, text = cli(capsys, "validate", "toy-quick", "--set", "device=cuda")  # validate checks the machine too
    assert code == 2 and "keys and values are valid" in text


def test_cli_augment_size_beyond_memory_names_key_and_sizes(capsys):
    huge = 10**9  # 10^9 images of 96x96: about 8.6 TB
    code, text = cli(capsys, "run", "toy-quick", "--set", f"augment.size={huge}", "--set", f"dataset.unlabelled={huge}")
    assert code == 2 and f"augment.size ({huge})" in text and "GiB in memory" in text


def test_cli_workspace_that_is_a_file(tmp_path, capsys):
    (tmp_path / "ws").write_text("not a folder")
    code, text = cli(capsys, "run", "toy-quick", "--set", f"workspace={tmp_path / 'ws'}")
    assert code == 3 and f"workspace {tmp_path / 'ws'} is a file" in text and "MLflow" not in text


def test_cli_workspace_read_only(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the permission check see what a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    try:
        code, text = cli(capsys, "run", "toy-quick", "--set", f"workspace={folder / 'ws'}")
    finally:
        folder.chmod(0o755)
    assert code == 3 and f"workspace {folder / 'ws'} cannot be created: {folder} is read-only" in text


def test_cli_validate_and_list(capsys, tmp_path):
    code, text = cli(capsys, "validate", "toy-quick", "--set", "seeds=[7]", "--set", f"workspace={tmp_path / 'ws'}")
    assert code == 0 and "valid" in text and "1 seed(s)" in text
    assert not (tmp_path / "ws").exists()  # validating creates nothing
    assert main(["validate", "toy-quick", "--set", "seeds=[7]", "--show"]) == 0
    shown = capsys.readouterr().out
    assert yaml.safe_load(shown.split("toy-quick: valid")[0])["seeds"] == [7]
    assert main(["configs"]) == 0
    assert "toy-paper-3k-hard" in capsys.readouterr().out
