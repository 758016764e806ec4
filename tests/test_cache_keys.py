"""Which config change invalidates which stage.

Every stage's store entry is named by a key of what determines it. Here each stage's real key
function runs, wired as the comparison flow wires them, with the builds themselves stubbed out:
so the test takes a second and checks that a setting retrains exactly the stages it affects.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ausynth.configs.loader import load_config
from ausynth.tasks import classifiers, datasets, generator_stage
from ausynth.tasks.gan_training import CHECKPOINT
from ausynth.tasks.strategies import BASELINE, STRATEGIES, Inputs

from conftest import TINY

STAGES = ["dataset", "teacher", "pool_scores", "generator", "oracle", "generated"]
CLASSIFIERS = [f"classifier/{name}/seed{seed}" for name in STRATEGIES for seed in (0, 1)]


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """``keys(*overrides)``: every stage's key for the tiny config with those overrides, nothing built."""
    built: list[tuple[str, str]] = []

    def no_build(root: Path, kind: str, key: str, build) -> Path:
        built.append((kind, key))
        return Path(root) / kind / key

    def no_training(data, cfg, seed, device, out_dir, on_log=None):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / CHECKPOINT).write_bytes(b"stub")

    for module in (datasets, classifiers, generator_stage):
        monkeypatch.setattr(module, "cached_folder", no_build)
    monkeypatch.setattr(generator_stage, "train_gan", no_training)
    monkeypatch.setattr(generator_stage, "generator_training_set", lambda *args: None)
    runs = iter(range(1000))

    def compute(*overrides: str) -> dict[str, str]:
        workspace = tmp_path / f"ws{next(runs)}"  # a store of its own: the generator stage finds no entry
        cfg = load_config("toy-quick", [*TINY, "seeds=[0, 1]", f"workspace={workspace}", *overrides])
        dataset = datasets.prepare_dataset(cfg)
        teacher = classifiers.fit_classifier(cfg, BASELINE, cfg.seeds[0], Inputs(dataset))
        pool_scores = classifiers.score_pool(cfg, dataset, teacher)
        generator = generator_stage.fit_generator(cfg, dataset, pool_scores)
        oracle = generator_stage.fit_oracle(cfg, dataset)
        generated = generator_stage.make_isolated(cfg, dataset, generator, pool_scores, oracle)
        inputs = Inputs(dataset, pool_scores, generated)
        found = dict(zip(STAGES, (item.key for item in (dataset, teacher, pool_scores, generator, oracle, generated))))
        for name, strategy in STRATEGIES.items():
            for seed in cfg.seeds:
                found[f"classifier/{name}/seed{seed}"] = classifiers.classifier_key(cfg, strategy, seed, inputs)
        return found

    compute.built = built
    return compute


def changed(keys, *overrides: str) -> set[str]:
    base, other = keys(), keys(*overrides)
    return {name for name in base if base[name] != other[name]}


def classifiers_of(*strategies: str) -> set[str]:
    return {f"classifier/{name}/seed{seed}" for name in strategies for seed in (0, 1)}


def test_every_stage_has_its_own_key_and_the_same_config_gives_the_same_keys(keys):
    first = keys()
    assert len(first) == len(STAGES) + len(CLASSIFIERS)
    assert first["teacher"] == first["classifier/supervised/seed0"]  # the teacher is the baseline of seed 0
    assert len(set(first.values())) == len(first) - 1  # every other pair differs
    assert keys() == first
    kinds = {kind for kind, _ in keys.built}
    assert kinds == {"datasets", "independent_datasets", "classifiers", "pool_scores", "generated"}


def test_the_run_name_and_workspace_are_not_part_of_any_key(keys):  # each keys() call has its own workspace
    assert changed(keys, "name=elsewhere", "experiment=other") == set()


def test_classifier_settings_retrain_the_classifiers_but_reuse_the_dataset_and_the_toy_oracle(keys):
    """The toy set's oracle trains with the default profile on its own independent-AU images."""
    assert changed(keys, "classifier.lr=0.002") == set(STAGES) - {"dataset", "oracle"} | set(CLASSIFIERS)
    assert "oracle" in changed(keys, "classifier.width=8")  # its network is the comparison's


def test_the_au_correlation_changes_everything_but_the_toy_oracle(keys):
    assert changed(keys, "dataset.p_correlated=0.5") == set(STAGES) - {"oracle"} | set(CLASSIFIERS)


def test_augment_size_changes_what_strategies_add_but_not_the_baseline_or_the_generator(keys):
    # the semi-supervised GAN shows augment.size pool images as real, as many as the others add
    assert changed(keys, "augment.size=150") == {"generated"} | classifiers_of("upsample", "pseudo_label", "generator",
                                                                               "semi_supervised_gan")


def test_pseudo_label_confidence_changes_the_pseudo_labels_and_the_generators_training_set(keys):
    assert changed(keys, "pseudo_label.confidence=0.8") == {"generator", "generated"} | classifiers_of(
        "pseudo_label", "generator")


def test_generator_training_settings_retrain_only_the_generator_and_its_strategy(keys):
    expected = {"generator", "generated"} | classifiers_of("generator")
    assert changed(keys, "generator.steps=6") == expected
    assert changed(keys, "generator.lambda_cycle=5") == expected


def test_generation_settings_regenerate_without_retraining_the_generator(keys):
    assert changed(keys, "generator.intensity=0.7") == {"generated"} | classifiers_of("generator")


@pytest.mark.parametrize("setting", ["generator.log_every=1", "generator.sample_every=1",
                                     "generator.checkpoint_every=1"])
def test_logging_and_checkpoint_intervals_change_nothing(keys, setting):
    assert changed(keys, setting) == set()


def test_the_dataset_seed_changes_everything(keys):
    assert changed(keys, "dataset.seed=1") == set(STAGES) | set(CLASSIFIERS)


def test_a_seed_list_change_keeps_the_shared_seeds_models(keys):
    """Adding a seed trains the new seed's classifiers only; the first seed decides the teacher and generator."""
    base, more = keys(), keys("seeds=[0, 1, 2]")
    assert {name: more[name] for name in base} == base
