import json
from pathlib import Path

import pytest

from ausynth.configs.loader import ConfigError, load_config
from ausynth.flows.cli import main


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


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
    ("strategies: [supervised, mixup]\n", "strategies.1"),
    ("seeds: []\n", "seeds"),
])
def test_bad_keys_and_values_are_named(tmp_path, text, named):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert named in str(err.value) and "exp.yaml" in str(err.value)


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(write(tmp_path, "dataset: [unclosed\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


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


def test_cli_bad_config_exits_nonzero_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = write(tmp_path, "strategies: [supervised, nonsense]\n")
    assert main(["run", str(bad), "--set", f"workspace={tmp_path / 'ws'}"]) == 2
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert main(["run", "toy-quick", "--set", "dataset.labelled=-1"]) == 2
    out = capsys.readouterr().out
    assert "nonsense" in out and "missing.yaml" in out and "dataset.labelled" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_cli_validate_and_list(capsys):
    assert main(["validate", "toy-quick", "--set", "seeds=[7]"]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == [7]
    assert main(["configs"]) == 0
    assert "toy-paper-3k-hard" in capsys.readouterr().out
