"""The conditional GAN from noise (kind ``cgan``): networks, adversarial losses, config, exact resume,
diversity, generation without sources, refused label types, and a tiny comparison through the flow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ausynth.configs.generator import GeneratorConfig
from ausynth.configs.loader import load_config
from ausynth.models import gan_losses as L
from ausynth.models.cgan import CGANDiscriminator, CGANGenerator
from ausynth.tasks.checkpoint import TrainedGenerator
from ausynth.tasks.diversity import diversity, spread
from ausynth.tasks.errors import CheckpointError, ConfigError, DataError
from ausynth.tasks.gan_training import train_gan
from ausynth.tasks.generate import generate_isolated, generate_verified
from ausynth.tasks.generator_kinds import Architecture, generator_kind
from ausynth.tasks.imageset import ImageSet

from conftest import TINY
from test_generate import COLUMNS, SIZE, CellOracle, grid_images, pool_set
from test_train_generator import emotion_set, grid_set, tiny

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize("upsampling", ["nearest", "transposed"])
@pytest.mark.parametrize("conditioning", ["projection", "concat"])
@pytest.mark.parametrize("channels, size", [(1, (32, 32)), (3, (48, 64))])
def test_generator_and_discriminator_shapes(upsampling, conditioning, channels, size) -> None:
    torch.manual_seed(0)
    G = CGANGenerator(channels, size, 5, 16, 4, upsampling, "relu")
    images = G(torch.randn(3, 16), torch.rand(3, 5))
    assert images.shape == (3, channels, *size) and images.abs().max() <= 1  # tanh
    scores, labels = CGANDiscriminator(channels, size, 5, 4, conditioning)(images, torch.rand(3, 5))
    assert scores.shape == (3, 1) and labels.shape == (3, 5)


def test_the_discriminator_reads_the_label_and_the_generator_the_noise() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    for conditioning in ("projection", "concat"):
        D = CGANDiscriminator(1, (32, 32), 3, 4, conditioning)
        assert not torch.equal(D(x, torch.eye(3)[:2])[0], D(x, torch.eye(3)[1:])[0]), conditioning
    G = CGANGenerator(1, (32, 32), 3, 8, 4).eval()
    label = torch.eye(3)[:1]
    assert not torch.equal(G(torch.randn(1, 8), label), G(torch.randn(1, 8), label))


def test_image_size_not_multiple_of_16_is_rejected() -> None:
    with pytest.raises(ValueError, match="40x40 is not a positive multiple of 16"):
        CGANGenerator(1, (40, 40), 3, 8, 4)
    with pytest.raises(ValueError, match="multiple of 16"):
        CGANDiscriminator(1, (40, 40), 3, 4)


# ----------------------------------------------------------------------------- adversarial losses


def test_bce_is_the_original_gan_loss_with_a_non_saturating_generator() -> None:
    zero = torch.zeros(4)
    assert L.bce_critic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))  # D(x) = 1/2 everywhere
    assert L.bce_critic_loss(torch.full((4,), 20.0), torch.full((4,), -20.0)).item() < 1e-6  # D right
    assert L.bce_critic_loss(torch.full((4,), -20.0), torch.full((4,), 20.0)).item() == pytest.approx(40, rel=1e-3)
    # a critic sure that the fakes are fake still gives the generator a full gradient (-1/N per score)
    scores = torch.full((4,), -20.0, requires_grad=True)
    L.bce_generator_loss(scores).backward()
    assert torch.allclose(scores.grad, torch.full((4,), -0.25))
    assert L.bce_generator_loss(torch.full((4,), 5.0)) < L.bce_generator_loss(torch.zeros(4))


def test_hinge_pushes_only_scores_inside_the_margin() -> None:
    assert L.hinge_critic_loss(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -5.0])).item() == 0.0
    assert L.hinge_critic_loss(torch.zeros(2), torch.zeros(2)).item() == 2.0
    assert L.hinge_critic_loss(torch.tensor([0.5]), torch.tensor([0.0])).item() == 1.5
    real = torch.tensor([2.0, 0.0], requires_grad=True)
    L.hinge_critic_loss(real, torch.full((2,), -2.0)).backward()
    assert real.grad.tolist() == [0.0, -0.5]  # the score past the margin gets no push


def test_each_adversarial_objective_and_its_undecided_value() -> None:
    assert set(L.ADVERSARIAL) == {"wgan_gp", "bce", "hinge"}
    assert [name for name, a in L.ADVERSARIAL.items() if a.penalised] == ["wgan_gp"]
    zero = torch.zeros(3)
    for name, adversarial in L.ADVERSARIAL.items():
        assert adversarial.critic(zero, zero).item() == pytest.approx(adversarial.undecided), name
        better, worse = torch.ones(3), -torch.ones(3)
        assert adversarial.generator(better) < adversarial.generator(worse), name  # it wants high scores on fakes
        assert adversarial.critic(better, worse) < adversarial.critic(worse, better), name


def test_config_names_the_key_at_fault() -> None:
    cfg = GeneratorConfig(kind="cgan", adversarial_loss="hinge", lambda_gp=0)  # no penalty: lambda_gp is unused
    assert (cfg.cgan.noise_dim, cfg.cgan.upsampling, cfg.cgan.conditioning) == (64, "nearest", "projection")
    with pytest.raises(ValidationError, match="generator.lambda_gp is 0 with generator.adversarial_loss 'wgan_gp'"):
        GeneratorConfig(kind="cgan", lambda_gp=0)
    with pytest.raises(ConfigError, match="generator.adversarial_loss"):
        load_config("toy-quick", ["generator.adversarial_loss=lsgan"])
    with pytest.raises(ConfigError, match="generator.cgan.upsampling"):
        load_config("toy-quick", ["generator.cgan.upsampling=bilinear"])
    assert load_config("toy-quick").generator.kind == "cgan"
    assert load_config("toy-quick-em").generator.kind == "em"


# ----------------------------------------------------------------------------- the kind


def test_the_architecture_records_the_cgan_shape() -> None:
    data = grid_set(4)
    arch = Architecture.of(tiny(kind="cgan"), data)
    assert dict(arch.options) == {"noise_dim": 64, "upsampling": "nearest", "activation": "leaky_relu",
                                  "conditioning": "projection"}
    assert Architecture.from_dict(arch.as_dict()) == arch
    assert "noise_dim 64" in arch.describe()
    other = Architecture.of(tiny(kind="cgan", cgan={"upsampling": "transposed"}), data)
    with pytest.raises(CheckpointError, match="differs in options(.|\n)*upsampling transposed"):
        other.require(arch, "x.pt")
    em = Architecture.of(tiny(kind="em"), data)
    assert em.options == () and Architecture.from_dict({k: v for k, v in em.as_dict().items() if k != "options"}) == em


def test_cgan_takes_every_label_type() -> None:
    cfg = tiny(kind="cgan")
    kind = generator_kind("cgan")
    expected = {"au_presence": "binary", "au_intensity": "graded", "emotion": "category", "valence_arousal": "graded"}
    for label_type, targets in expected.items():
        objective = kind.objective(cfg, label_type)
        assert (objective.targets, objective.noise_dim, objective.cycle_weight) == (targets, 64, 0.0)
    x = torch.zeros(5, 1, 32, 32)
    assert kind.objective(cfg, "au_presence").inputs(x).shape == (5, 64)  # noise, not the image
    assert generator_kind("em").objective(cfg, "au_presence").inputs(x) is x


def va_set(n: int) -> ImageSet:
    """Valence/arousal labels in -1..1 on random images."""
    frame = pd.DataFrame({"subject": "s", "origin": "labelled", "valence": np.linspace(-1, 1, n, dtype=np.float32),
                          "arousal": np.float32(0.5)})
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)
    return ImageSet(images, frame, ["valence", "arousal"], {"label_type": "valence_arousal"})


@pytest.mark.parametrize("make", [emotion_set, va_set])
def test_cgan_trains_on_emotions_and_valence_arousal(tmp_path: Path, make) -> None:
    data = make(12)
    trained = train_gan(data, tiny(kind="cgan", steps=2, sample_every=2), seed=0, device=CPU, out_dir=tmp_path)
    assert trained.architecture.label_type == data.meta["label_type"] and trained.step == 2
    assert trained.model(torch.randn(2, 64), torch.from_numpy(data.labels[:2])).shape == (2, 1, 32, 32)


def test_a_kind_refusing_valence_arousal_points_at_cgan() -> None:
    with pytest.raises(ConfigError, match="'stargan' cannot condition on 'valence_arousal'.*use kind 'cgan'"):
        Architecture.of(tiny(kind="stargan"), va_set(4))


def test_training_logs_diversity_per_label_and_headed_samples(tmp_path: Path) -> None:
    logs: list[tuple[int, dict]] = []
    cfg = tiny(kind="cgan", adversarial_loss="bce", steps=4, log_every=2, sample_every=4)
    train_gan(grid_set(24), cfg, seed=0, device=CPU, out_dir=tmp_path,
              on_log=lambda step, metrics, image: logs.append((step, metrics)))
    assert [step for step, _ in logs] == [2, 4]
    assert not any(k.startswith("diversity/") for k in logs[0][1])  # only at sample steps
    scores = {k: v for k, v in logs[1][1].items() if k.startswith("diversity/")}
    assert set(scores) == {f"diversity/{c}" for c in COLUMNS} and all(v >= 0 for v in scores.values())
    assert "d_gp" not in logs[1][1] and "g_cycle" not in logs[1][1]  # no penalty with bce, no cycle from noise
    from PIL import Image
    grid = Image.open(tmp_path / "samples" / "step_000004.jpg")
    assert grid.width == (1 + len(COLUMNS)) * (32 + 2) + 2  # the real image, then one column per label


# ----------------------------------------------------------------------------- diversity


def test_diversity_of_a_collapsed_and_a_diverse_batch() -> None:
    rng = torch.Generator().manual_seed(0)
    real = torch.rand(16, 1, 8, 8, generator=rng)
    collapsed = real[:1].repeat(16, 1, 1, 1) + 1e-3 * torch.randn(16, 1, 8, 8, generator=rng)
    diverse = torch.rand(16, 1, 8, 8, generator=rng)
    assert diversity(collapsed, real) < 0.01
    assert diversity(diverse, real) == pytest.approx(1, abs=0.1)
    assert diversity(real, real) == 1.0
    assert spread(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == 5.0  # one pair, Euclidean
    assert math.isnan(diversity(diverse, real[:1]))  # one real image: nothing to compare with


# ----------------------------------------------------------------------------- generation without sources


class CellPainter(nn.Module):
    """A stand-in cgan generator: lights the cell of every label asked for, except those in ``fails``."""

    def __init__(self, fails: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.fails = fails

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        active = [[k for k in range(len(COLUMNS)) if row[k] > 0.5 and k not in self.fails] for row in labels]
        return torch.from_numpy(grid_images(active)).permute(0, 3, 1, 2).float() / 127.5 - 1


def painter(fails: tuple[int, ...] = ()) -> TrainedGenerator:
    arch = Architecture("cgan", "au_presence", 4, 0, (SIZE, SIZE, 1), tuple(COLUMNS), (("noise_dim", 8),))
    return TrainedGenerator(CellPainter(fails), arch, Path("painter.pt"), 0)


def test_isolated_images_from_noise_need_no_neutral_source() -> None:
    pool = pool_set(np.ones((3, 4)))  # every image shows every AU: no neutral source at all
    cfg = GeneratorConfig(kind="cgan", cgan={"noise_dim": 8})
    made = generate_isolated(painter(), pool, cfg, 10, CPU)
    assert len(made) == 10 and made.frame["target"].tolist()[:4] == COLUMNS
    assert (made.frame["subject"] == "cgan").all() and made.frame["source_index"].tolist()[:5] == [0, 0, 0, 0, 1]
    assert np.array_equal(made.labels, np.eye(4, dtype=np.float32)[np.arange(10) % 4])
    kept, tried = generate_verified(painter(), pool, cfg, 8, CPU, None, CellOracle(), 0.5)
    assert len(kept) == len(tried) == 8 and kept.frame["passed"].all()


def test_generate_until_n_and_its_budget_apply_to_noise() -> None:
    pool = pool_set(np.ones((3, 4)))
    cfg = GeneratorConfig(kind="cgan", cgan={"noise_dim": 8}, max_rounds=3)
    with pytest.raises(DataError, match=r"short by \{'AU2': 2\} after 24 tries"):  # 3 rounds of 2 codes x 4 labels
        generate_verified(painter(fails=(1,)), pool, cfg, 8, CPU, None, CellOracle(), 0.5)
    filled, tried = generate_verified(painter(fails=(1,)), pool, cfg.model_copy(update={"on_shortfall": "fill"}), 8,
                                      CPU, None, CellOracle(), 0.5)
    assert len(filled) == 8 and (~filled.frame["passed"]).sum() == 2 and len(tried) == 24


# ----------------------------------------------------------------------------- refused label types


def va_faces_config(tmp_path: Path, kind: str) -> Path:
    """A face dataset of ready 16x16 crops labelled with valence/arousal, the generator strategy on."""
    from PIL import Image

    rows = []
    for i in range(24):
        name = f"img/{i}.png"
        (tmp_path / "img").mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8), "L").save(tmp_path / name)
        rows.append(f"{name},s{i % 8},{(i % 5) / 5 - 0.4:.1f},{(i % 3) / 3:.2f}")
    (tmp_path / "labels.csv").write_text("path,subject,valence,arousal\n" + "\n".join(rows) + "\n")
    (tmp_path / "config.yaml").write_text(f"""name: va-tiny
seeds: [0]
workspace: {tmp_path / 'ws'}
dataset:
  kind: faces
  source: {{manifest: {tmp_path / 'labels.csv'}}}
  detection: {{backend: none, size: 16, channels: 1}}
strategies: [supervised, generator]
generator: {{kind: {kind}}}
""")
    return tmp_path / "config.yaml"


def test_the_generator_strategy_refuses_labels_with_nothing_to_isolate(tmp_path: Path) -> None:
    from ausynth.tasks.datasets import prepare_dataset
    from ausynth.tasks.preflight import check_inputs

    cfg = load_config(va_faces_config(tmp_path, "cgan"))
    dataset = prepare_dataset(cfg)
    with pytest.raises(ConfigError, match="strategies: 'generator'.*'valence_arousal' labels have none to show alone"):
        check_inputs(cfg, dataset)
    stargan = cfg.model_copy(update={"generator": GeneratorConfig(kind="stargan")})
    with pytest.raises(ConfigError, match="generator.kind 'stargan' cannot condition on 'valence_arousal'"):
        check_inputs(stargan, dataset)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_the_comparison_runs_with_cgan(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from ausynth.flows.compare import compare_strategies

    overrides = [*TINY, "strategies=[supervised, generator]", "generator.kind=cgan", "generator.adversarial_loss=hinge",
                 "generator.drop_failed=true", "generator.on_shortfall=fill", "generator.max_rounds=2",
                 f"workspace={tmp_path / 'ws'}"]
    result = compare_strategies("toy-quick", overrides=overrides)
    assert list(result.table.index) == ["supervised", "generator"]
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert [m.step for m in client.get_metric_history(result.parent_run_id, "gan/diversity/AU1")] == [2, 4]
    assert 0 <= parent.data.metrics["generated/pass_rate"] <= 1 and "generated/diversity" in parent.data.metrics
    generated = next((tmp_path / "ws" / "store" / "generated").glob("*/summary.json")).parent
    quality = pd.read_csv(generated / "quality.csv", index_col=0)
    assert {"pass_rate", "real_pass_rate", "diversity"} <= set(quality.columns) and len(quality) == 9
    summary = json.loads((generated / "summary.json").read_text())
    assert quality["kept_images"].sum() == 100 and summary["labels_with_images"] == 9  # fill keeps every AU's share
    assert summary["images"] == 100 and "change_inside" not in summary and not (generated / "sources.csv").exists()
