"""The generator training loop (it learns, logs, samples, checkpoints and resumes exactly), its checkpoints,
and the generator stage's store entry (one training however many runs ask for it at once)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ausynth.configs.generator import GeneratorConfig
from ausynth.tasks.checkpoint import load_generator, read_checkpoint
from ausynth.tasks.errors import CheckpointError, ConfigError
from ausynth.tasks.gan_training import (CHECKPOINT, CollapseWatch, learning_rate, real_weights, sample_targets,
                                       train_gan)
from ausynth.tasks.generator_kinds import Architecture, generator_kind
from ausynth.tasks.imageset import ImageSet

CPU = torch.device("cpu")


def grid_set(n: int, size: int = 32, channels: int = 1, seed: int = 0) -> ImageSet:
    """A 2x2 toy grid: label k lights cell k (row-major) on a noisy background."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 4)) < 0.4).astype(np.float32)
    images = rng.integers(0, 60, size=(n, size, size, channels)).astype(np.uint8)
    cell = size // 2
    for k in range(4):
        r, c = divmod(k, 2)
        images[labels[:, k] > 0, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 230
    frame = pd.DataFrame(labels, columns=[f"AU{k}" for k in range(1, 5)])
    frame.insert(0, "subject", [f"s{i % 5}" for i in range(n)])
    frame.insert(1, "origin", "labelled")
    return ImageSet(images, frame, list(frame.columns[2:]))


def tiny(**overrides) -> GeneratorConfig:
    settings = dict(base_channels=4, n_res_blocks=1, batch_size=4, steps=6, log_every=1, sample_every=3,
                    checkpoint_every=2)
    return GeneratorConfig(**{**settings, **overrides})


class Killed(Exception):
    """Stands in for the process being killed at a given step."""


@pytest.mark.parametrize("kind", ["em", "stargan"])
def test_training_learns_logs_and_samples(tmp_path: Path, kind: str) -> None:
    data = grid_set(32)
    logs: list[tuple[int, dict, Path | None]] = []
    cfg = tiny(kind=kind, steps=30, lr=2e-3, log_every=10, sample_every=15, checkpoint_every=10)
    torch.manual_seed(0)
    arch = Architecture.of(cfg, data)
    before = generator_kind(kind).generator(arch).state_dict()
    trained = train_gan(data, cfg, seed=0, device=CPU, out_dir=tmp_path,
                              on_log=lambda step, metrics, image: logs.append((step, metrics, image)))
    assert [step for step, _, _ in logs] == [10, 15, 20, 30]
    assert {"d_loss", "d_gp", "g_loss", "g_cycle", "fake_std", "steps_per_s", "lr"} <= set(logs[0][1])
    images = [image for _, _, image in logs if image is not None]
    assert [p.name for p in images] == ["step_000015.jpg", "step_000030.jpg"] and all(p.is_file() for p in images)
    assert logs[-1][1]["g_cycle"] < logs[0][1]["g_cycle"]  # it learns to reconstruct its input
    after = trained.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert trained.step == 30 and len(trained.history) == 4 and not trained.model.training
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT, "samples"]  # no temporary files left


@pytest.mark.parametrize(("kind", "loss"), [("em", "wgan_gp"), ("stargan", "wgan_gp"), ("cgan", "bce"),
                                          ("cgan", "hinge"), ("cgan", "wgan_gp")])
def test_resume_after_kill_equals_uninterrupted_run(tmp_path: Path, kind: str, loss: str) -> None:
    data, cfg = grid_set(16), tiny(kind=kind, adversarial_loss=loss, n_critic=2)
    whole = train_gan(data, cfg, seed=3, device=CPU, out_dir=tmp_path / "whole")

    def kill_at_5(step: int, metrics: dict, image: Path | None) -> None:
        if step == 5:
            raise Killed
    with pytest.raises(Killed):  # killed after the step-4 checkpoint: step 5 is redone after resuming
        train_gan(data, cfg, seed=3, device=CPU, out_dir=tmp_path / "killed", on_log=kill_at_5)
    assert torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)["step"] == 4
    resumed = train_gan(data, cfg, seed=3, device=CPU, out_dir=tmp_path / "killed")

    a = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)
    for net in ("generator", "discriminator"):  # batch norm's running statistics included (cgan)
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
    for opt in ("opt_g", "opt_d"):
        for index, state in a[opt]["state"].items():
            assert torch.equal(state["exp_avg"], b[opt]["state"][index]["exp_avg"])
    assert [h["d_loss"] for h in a["history"]] == [h["d_loss"] for h in b["history"]]
    assert [h.get("diversity/AU1") for h in a["history"]] == [h.get("diversity/AU1") for h in b["history"]]
    assert resumed.step == whole.step == 6


def test_a_different_seed_gives_different_weights(tmp_path: Path) -> None:
    data, cfg = grid_set(16), tiny(steps=2)
    a = train_gan(data, cfg, seed=0, device=CPU, out_dir=tmp_path / "a").model.state_dict()
    b = train_gan(data, cfg, seed=1, device=CPU, out_dir=tmp_path / "b").model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_wrong_architecture_or_image_size_names_both(tmp_path: Path) -> None:
    data = grid_set(16)
    train_gan(data, tiny(steps=2), seed=0, device=CPU, out_dir=tmp_path)
    path = tmp_path / CHECKPOINT
    other_kind = Architecture.of(tiny(kind="stargan"), data)
    with pytest.raises(CheckpointError) as error:
        load_generator(path, CPU, other_kind)
    message = str(error.value)
    assert str(path) in message
    assert "differs in kind" in message and "expected: stargan" in message and "found:    em" in message
    bigger = grid_set(16, size=64)
    with pytest.raises(CheckpointError, match="image_shape(.|\n)*64x64x1 images(.|\n)*32x32x1 images"):
        train_gan(bigger, tiny(steps=2), seed=0, device=CPU, out_dir=tmp_path)  # resume into other data
    with pytest.raises(CheckpointError, match="differs in base_channels"):
        read_checkpoint(path, Architecture.of(tiny(base_channels=8), data))
    assert read_checkpoint(path, Architecture.of(tiny(), data))["step"] == 2  # the matching one loads


def test_a_loaded_checkpoint_translates_as_the_trained_generator(tmp_path: Path) -> None:
    data = grid_set(16)
    trained = train_gan(data, tiny(steps=2), seed=0, device=CPU, out_dir=tmp_path)
    loaded = load_generator(tmp_path / CHECKPOINT, CPU, Architecture.of(tiny(), data))
    assert loaded.checkpoint == tmp_path / CHECKPOINT and loaded.step == 2 and not loaded.model.training
    x = torch.zeros(1, 1, 32, 32)
    assert torch.equal(loaded.model(x, torch.ones(1, 4)), trained.model(x, torch.ones(1, 4)))


def test_an_em_with_edit_regions_trains_saves_and_loads_with_its_regions(tmp_path: Path) -> None:
    data = grid_set(16)
    data.meta["dataset"] = "faces"  # the FACS map: AU1, AU2, AU4 at the brows; AU3 has no region
    cfg = tiny(steps=2, edit_regions=True)
    trained = train_gan(data, cfg, seed=0, device=CPU, out_dir=tmp_path)
    loaded = load_generator(tmp_path / CHECKPOINT, CPU, Architecture.of(cfg, data))
    assert torch.equal(loaded.model.regions, trained.model.regions) and loaded.model.regions[2].min() == 1
    x, change = torch.zeros(1, 1, 32, 32), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert torch.equal(loaded.model(x, change), trained.model(x, change))
    assert loaded.model(x, change)[0, 0, -4:].abs().max() < 1e-3  # AU1 leaves the chin as it was
    with pytest.raises(CheckpointError, match="differs in options"):  # without regions it is another network
        load_generator(tmp_path / CHECKPOINT, CPU, Architecture.of(tiny(), data))


def test_not_a_checkpoint_truncated_or_missing(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an ausynth generator checkpoint"):
        load_generator(tmp_path / "other.pt", CPU)
    train_gan(grid_set(16), tiny(steps=1), seed=0, device=CPU, out_dir=tmp_path)
    whole = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'cut.pt'} cannot be read"):
        read_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'gone.pt'} does not exist"):
        read_checkpoint(tmp_path / "gone.pt")


def test_unlabelled_rows_are_left_out(tmp_path: Path, caplog) -> None:
    data = grid_set(16)
    data.frame.loc[:3, "AU1"] = np.nan
    with caplog.at_level(logging.WARNING, logger="ausynth"):
        train_gan(data, tiny(steps=1), seed=0, device=CPU, out_dir=tmp_path)
    assert "4 of 16 images have missing labels" in caplog.text


def emotion_set(n: int) -> ImageSet:
    """One-hot emotion categories, each drawn as a brighter image."""
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, n)
    images = (classes[:, None, None, None] * 80 + rng.integers(0, 40, (n, 32, 32, 1))).astype(np.uint8)
    frame = pd.DataFrame(np.eye(3, dtype=np.float32)[classes], columns=["emotion_angry", "emotion_happy",
                                                                         "emotion_neutral"])
    frame.insert(0, "subject", "s")
    frame.insert(1, "origin", "labelled")
    return ImageSet(images, frame, list(frame.columns[2:]), {"label_type": "emotion"})


def test_stargan_trains_on_emotion_categories_and_em_refuses_them(tmp_path: Path) -> None:
    data = emotion_set(12)
    trained = train_gan(data, tiny(kind="stargan", steps=2), seed=0, device=CPU, out_dir=tmp_path)
    assert trained.architecture.label_type == "emotion"
    with pytest.raises(ConfigError, match="'em' cannot condition on 'emotion' labels.*use kind 'stargan'"):
        train_gan(data, tiny(kind="em", steps=2), seed=0, device=CPU, out_dir=tmp_path / "em")
    one_hot = torch.eye(3)[torch.tensor([0, 1, 2, 2])]
    assert torch.equal(sample_targets(one_hot, "per_au", categorical=True).sum(1), torch.ones(4))


def test_learning_rate_decays_linearly_to_zero() -> None:
    cfg = GeneratorConfig(steps=100, lr=1e-4, decay_from=0.5)
    assert [learning_rate(cfg, s) for s in (1, 50, 75, 100)] == pytest.approx([1e-4, 1e-4, 5e-5, 0.0])


def test_per_au_targets_keep_each_label_frequency() -> None:
    torch.manual_seed(0)
    labels = (torch.rand(64, 5) < 0.3).float()
    targets = sample_targets(labels, "per_au", categorical=False)
    assert torch.equal(targets.sum(0), labels.sum(0)) and not torch.equal(targets, labels)
    shuffled = sample_targets(labels, "shuffle", categorical=False)
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, labels.tolist()))


def test_decorrelated_sampling_draws_each_pattern_of_a_correlated_pair_equally_often() -> None:
    """AU2 and AU3 together in 95% of the images that have either: drawn by weight, AU2 without AU3 (and
    AU3 without AU2, neither, both) comes a quarter of the time; the uncorrelated AU1 keeps its frequency."""
    rng = np.random.default_rng(0)
    pair, lone, which = rng.random(4000) < 0.4, rng.random(4000) < 0.05, rng.random(4000) < 0.5
    au2, au3 = pair & ~(lone & which), pair & ~(lone & ~which)  # 5% of the pairs lose one of the two
    present = np.column_stack([rng.random(4000) < 0.3, au2, au3])
    assert real_weights(present, ["AU1", "AU2", "AU3"], "uniform") is None
    weights = real_weights(present, ["AU1", "AU2", "AU3"], "decorrelated")
    drawn = present[torch.multinomial(weights, 20000, replacement=True, generator=torch.Generator().manual_seed(0))]
    for pattern in ((0, 0), (1, 1), (1, 0), (0, 1)):
        assert (drawn[:, 1:] == pattern).all(1).mean() == pytest.approx(0.25, abs=0.02), pattern
    assert drawn[:, 0].mean() == pytest.approx(present[:, 0].mean(), abs=0.03)
    assert real_weights(present[:, :1], ["AU1"], "decorrelated") is None  # no correlated pair: uniform


def test_collapse_warnings(caplog) -> None:
    watch = CollapseWatch()
    with caplog.at_level(logging.WARNING, logger="ausynth"):
        for step in range(5):
            watch.update(step, {"d_adv": 1e-5, "fake_std": 0.3})
        assert "stayed within" in caplog.text
        watch.update(6, {"d_adv": -2.0, "fake_std": 1e-4})
        assert "hardly vary" in caplog.text


# ----------------------------------------------------------------------------- the generator stage


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory):
    """A tiny config's dataset and the teacher's pool scores: what ``fit_generator`` trains from."""
    from ausynth.configs.loader import load_config
    from ausynth.tasks import classifiers, datasets
    from ausynth.tasks.strategies import BASELINE, Inputs

    from conftest import TINY

    cfg = load_config("toy-quick", [*TINY, f"workspace={tmp_path_factory.mktemp('stage') / 'ws'}"])
    dataset = datasets.prepare_dataset(cfg)
    teacher = classifiers.fit_classifier(cfg, BASELINE, cfg.seeds[0], Inputs(dataset))
    return cfg, dataset, classifiers.score_pool(cfg, dataset, teacher)


def test_two_runs_of_one_config_at_once_train_the_generator_once(stage_inputs) -> None:
    """Two comparisons of the same config used to collide in the generator's ``<key>.partial`` folder."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ausynth.tasks import datasets, generator_stage

    cfg, dataset, pool_scores = stage_inputs
    logged: list[tuple[str, int]] = []
    start = threading.Barrier(2)

    def run(name: str):
        start.wait()
        return generator_stage.fit_generator(cfg, dataset, pool_scores,
                                             on_log=lambda step, metrics, image: logged.append((name, step)))

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(run, ["a", "b"])
    assert first == second and first.path.name == CHECKPOINT and first.path.is_file()
    assert read_checkpoint(first.path)["step"] == cfg.generator.steps
    # steps 4, log_every 2: one training logs steps 2 and 4; two would log four lines
    assert sorted(step for _, step in logged) == [2, 4] and len({name for name, _ in logged}) == 1
    generators = datasets.store_root(cfg) / "generators"
    assert [p.name for p in generators.iterdir() if p.is_dir()] == [first.key]  # no .partial left
    again = generator_stage.fit_generator(cfg, dataset, pool_scores)
    assert again == first and len(logged) == 2  # a later run reuses it


def test_a_generator_entry_with_a_truncated_checkpoint_is_rebuilt(stage_inputs, tmp_path, caplog) -> None:
    """As every other store entry: set aside with a warning naming it, and trained again."""
    import logging

    from ausynth.tasks import generator_stage

    cfg, dataset, pool_scores = stage_inputs
    cfg = cfg.model_copy(update={"workspace": tmp_path / "ws"})  # a generator entry of its own
    trained = generator_stage.fit_generator(cfg, dataset, pool_scores)
    whole = trained.path.read_bytes()
    trained.path.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level(logging.WARNING, logger="ausynth"):
        rebuilt = generator_stage.fit_generator(cfg, dataset, pool_scores)
    assert rebuilt == trained
    assert read_checkpoint(rebuilt.path)["step"] == cfg.generator.steps  # today: the cut file is handed on
    assert str(trained.path.parent) in caplog.text and "damaged" in caplog.text
    assert list(trained.path.parent.parent.glob(f".{trained.key}.damaged-*"))


def test_a_generator_entry_without_its_checkpoint_is_rebuilt(stage_inputs, tmp_path) -> None:
    from ausynth.tasks import generator_stage

    cfg, dataset, pool_scores = stage_inputs
    cfg = cfg.model_copy(update={"workspace": tmp_path / "ws"})
    trained = generator_stage.fit_generator(cfg, dataset, pool_scores)
    trained.path.unlink()
    rebuilt = generator_stage.fit_generator(cfg, dataset, pool_scores)
    assert read_checkpoint(rebuilt.path)["step"] == cfg.generator.steps


@pytest.mark.parametrize("amp", [True, False])
def test_amp_trains_the_generator_in_bfloat16_on_a_bf16_cpu(tmp_path: Path, monkeypatch, amp: bool) -> None:
    """The training passes run in bfloat16 (no loss scaling: bf16 has float32's range); the checkpoint's
    weights stay float32."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    kind = generator_kind("em")
    seen: set[torch.dtype] = set()
    build = kind.generator

    def spied(arch):
        model = build(arch)
        model.register_forward_hook(lambda module, args, out: seen.add(out.dtype) if module.training else None)
        return model

    monkeypatch.setattr(type(kind), "generator", lambda self, arch: spied(arch))
    trained = train_gan(grid_set(16), tiny(kind="em", steps=2, amp=amp), seed=0, device=CPU, out_dir=tmp_path)
    assert seen == ({torch.bfloat16} if amp else {torch.float32})
    state = read_checkpoint(tmp_path / CHECKPOINT)
    assert state["scaler_g"] == {} and all(v.dtype == torch.float32 for v in trained.model.state_dict().values()
                                           if v.is_floating_point())
