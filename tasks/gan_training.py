"""Train every conditional GAN with one loop: WGAN-GP (or BCE, or hinge), Adam, linear lr decay, resumable.

The generator kinds (``generator_kinds``) differ only in their networks, how labels become the
generator's condition, what the generator starts from (the image, or noise) and which conditional
loss and reconstruction terms apply; their ``Objective`` holds those differences and the loop
(critic step, generator step every ``n_critic`` steps, logging, samples, diversity, checkpoints)
is shared. A step is one critic update.

Reproducibility: the networks are initialised from the seed while the global RNGs are held
(``device.seeded``), and every random draw of the loop (batch, targets, the cgan's noise, penalty
mix) comes from the loop's own ``torch.Generator``, seeded from the same seed. So tasks running
beside it on other threads (``execution.task_runner: threads``) neither change its numbers nor have theirs
changed. That generator's state (with the global ones) is saved in each checkpoint, and the lr
is a pure function of the step; so a run killed and resumed from its last checkpoint redoes the
same steps with the same numbers and ends with the same weights as a run never interrupted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from ausynth.configs.generator import GeneratorConfig
from ausynth.models import gan_losses as L
from ausynth.tasks import label_types
from ausynth.tasks.checkpoint import (TrainedGenerator, load_generator, read_checkpoint, rng_state,
                                      save_checkpoint, set_rng_state)
from ausynth.tasks.generator_kinds import Architecture, Objective, generator_kind
from ausynth.tasks.device import autocast, grad_scaler, mixed_precision, seeded
from ausynth.tasks.diversity import diversity
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.statistics import top_cooccurring_pairs
from ausynth.tasks.train_classifier import scale, to_tensor

log = logging.getLogger("ausynth")

LogCallback = Callable[[int, dict[str, float], Path | None], None]
CHECKPOINT = "generator.pt"
SAMPLE_IMAGES = 8
DIVERSITY_IMAGES = 16  # per label, generated and real, at every sample step
COLLAPSE_PATIENCE = 5  # consecutive logs with a near-zero critic loss before warning
CRITIC_EPS = 1e-3
STD_EPS = 1e-2  # per-pixel std over the generated batch, images in [-1, 1]
DIVERSITY_EPS = 0.1  # a label's generated images vary this little, relative to real ones: collapsed
HEADER = 14  # pixels above a sample grid for the column names
RESUME_FREE = {"log_every", "sample_every", "checkpoint_every", "intensity", "neutral_source", "neutral_threshold",
               "images_per_au", "drop_failed", "max_rounds", "on_shortfall", "checkpoint"}  # keys that do not change training


def sample_targets(labels: torch.Tensor, mode: str, categorical: bool,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Random targets for a batch: other images' label vectors, or each column permuted alone.
    Drawn on the CPU from ``generator`` (default: torch's global one)."""
    if mode == "shuffle" or categorical:
        return labels[torch.randperm(len(labels), generator=generator).to(labels.device)]
    order = torch.rand(labels.shape, generator=generator).argsort(dim=0).to(labels.device)
    return labels.gather(0, order)


STRONG_PHI = 0.5  # 'decorrelated' real sampling balances the AUs of pairs at least this correlated


def real_weights(present: np.ndarray, names: list[str], mode: str) -> torch.Tensor | None:
    """Per-row weights for drawing real images (None: uniform). 'decorrelated' gives each presence pattern
    of the AUs in strongly co-occurring pairs the same total weight, split evenly over its rows."""
    if mode == "uniform":
        return None
    pairs = top_cooccurring_pairs(present.astype(float), names, k=len(names) ** 2, min_phi=STRONG_PHI)
    columns = sorted({names.index(au) for pair in pairs for au in pair})
    if not columns:
        log.info("decorrelated sampling: no AU pair has phi >= %.1f, so real images are drawn uniformly", STRONG_PHI)
        return None
    _, pattern, counts = np.unique(present[:, columns], axis=0, return_inverse=True, return_counts=True)
    log.info("decorrelated sampling over %s: %d presence patterns, %d to %d images each",
             [names[c] for c in columns], len(counts), counts.min(), counts.max())
    return torch.from_numpy(1.0 / counts[pattern.ravel()])


def learning_rate(cfg: GeneratorConfig, step: int) -> float:
    """Constant, then falling linearly to zero over the steps after ``decay_from``."""
    start = cfg.decay_from * cfg.steps
    if step <= start:
        return cfg.lr
    return cfg.lr * max(0.0, (cfg.steps - step) / (cfg.steps - start))


class Networks:
    """Both networks, their optimisers and AMP scalers, and the losses of one update each."""

    def __init__(self, arch: Architecture, cfg: GeneratorConfig, device: torch.device) -> None:
        kind = generator_kind(arch.kind)
        self.cfg, self.objective = cfg, kind.objective(cfg, arch.label_type)
        self.adversarial = L.ADVERSARIAL[cfg.adversarial_loss]
        # channels-last: the cgan trains 1.3x faster on this CPU, the EM about the same (benchmarks/cpu_formats.py)
        self.G = kind.generator(arch).to(device, memory_format=torch.channels_last)
        self.D = kind.discriminator(arch).to(device, memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.precision = mixed_precision(device, cfg.amp)
        self.autocast = lambda: autocast(device, self.precision)
        self.scaler_g = grad_scaler(device, self.precision)
        self.scaler_d = grad_scaler(device, self.precision)

    def state(self) -> dict:
        return {"generator": self.G.state_dict(), "discriminator": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict()}

    def load(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])

    def set_lr(self, lr: float) -> None:
        for group in (*self.opt_g.param_groups, *self.opt_d.param_groups):
            group["lr"] = lr

    def critic(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's (scores, label outputs); one that reads the label (cgan) is given ``labels``."""
        return self.D(x, labels) if self.objective.critic_reads_labels else self.D(x)

    def d_step(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
               generator: torch.Generator | None = None) -> dict[str, float]:
        """One critic update; the generator's noise (cgan) and the penalty's real/fake mix are drawn on the
        CPU from ``generator`` (default: torch's global one)."""
        cfg, obj = self.cfg, self.objective
        with self.autocast():
            with torch.no_grad():
                fake = self.G(obj.inputs(x, generator), obj.condition(source, target))
            real_scores, real_labels = self.critic(x, source)
            fake_scores, _ = self.critic(fake, target)
            adv = self.adversarial.critic(real_scores.float(), fake_scores.float())
            cls = obj.cond_loss(real_labels, source)
        loss = adv + cfg.lambda_cls * cls
        metrics = {"d_adv": adv.item(), "d_cls": cls.item()}
        if self.adversarial.penalised:
            alpha = torch.rand(len(x), 1, 1, 1, generator=generator).to(x.device)
            gp = L.gradient_penalty(lambda z: self.critic(z, source)[0], x, fake, alpha)
            loss = loss + cfg.lambda_gp * gp
            metrics["d_gp"] = gp.item()
        self._update(loss, self.opt_d, self.scaler_d)
        fake_std = fake.float().std(dim=0).mean()
        return {"d_loss": loss.item(), **metrics, "fake_std": fake_std.item()}

    def g_step(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
               generator: torch.Generator | None = None) -> dict[str, float]:
        """One generator update; its noise (cgan) is drawn on the CPU from ``generator``."""
        cfg, obj = self.cfg, self.objective
        self.D.requires_grad_(False)  # the critic only passes gradients through here; skip its weight gradients
        with self.autocast():
            fake = self.G(obj.inputs(x, generator), obj.condition(source, target))
            scores, labels = self.critic(fake, target)
            adv = self.adversarial.generator(scores.float())
            cls = obj.cond_loss(labels, target)
            loss = adv + cfg.lambda_cls * cls
            metrics = {"g_adv": adv.item(), "g_cls": cls.item()}
            if obj.cycle_weight:
                cycle = L.l1_loss(self.G(fake, obj.condition(target, source)), x)
                loss = loss + obj.cycle_weight * cycle
                metrics["g_cycle"] = cycle.item()
            if obj.identity_weight:
                identity = L.l1_loss(self.G(x, torch.zeros_like(source)), x)
                loss = loss + obj.identity_weight * identity
                metrics["g_rec"] = identity.item()
        self._update(loss, self.opt_g, self.scaler_g)
        self.D.requires_grad_(True)
        return {"g_loss": loss.item(), **metrics}

    @staticmethod
    def _update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


@torch.no_grad()
def translate(model: torch.nn.Module, objective: Objective, x: torch.Tensor, source: torch.Tensor,
              target: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] translated to ``target`` labels, with the generator in eval mode."""
    was_training = model.training
    model.eval()
    out = model(x, objective.condition(source, target))
    model.train(was_training)
    return out


class Probe:
    """The fixed inputs that the sample grids and diversity scores are made from at every sample step.

    Fixed so that steps compare: the same images (and, for cgan, the same noise, drawn from the run's
    seed apart from the training draws, so resuming changes nothing) each time.
    """

    def __init__(self, nets: Networks, images: torch.Tensor, labels: torch.Tensor, present: np.ndarray,
                 names: list[str], seed: int) -> None:
        noise = torch.Generator().manual_seed(seed)
        self.nets, self.names = nets, names
        fixed = torch.from_numpy(_evenly(len(images), SAMPLE_IMAGES)).to(images.device)
        self.x, self.source = scale(images[fixed]), labels[fixed]
        self.inputs = nets.objective.inputs(self.x, noise)
        # per label: real images that show it, and as many inputs (other images, or noise) to ask for their labels
        self.groups = {}
        for k, name in enumerate(names):
            rows = np.flatnonzero(present[:, k])
            if len(rows) >= 2:
                real = torch.from_numpy(rows[_evenly(len(rows), DIVERSITY_IMAGES)]).to(images.device)
                other = torch.from_numpy(_evenly(len(images), len(real))).to(images.device)
                self.groups[name] = (scale(images[real]), labels[real],
                                     nets.objective.inputs(scale(images[other]), noise), labels[other])

    def samples(self, intensity: float, path: Path) -> Path:
        """A grid: one row per fixed image, the image itself then the generator's output for each single label,
        from that image (EM, StarGAN) or from that row's noise (cgan); the label names head the columns."""
        targets = self.nets.objective.single_targets(len(self.names), intensity, self.x.device)
        k = len(targets)
        outputs = translate(self.nets.G, self.nets.objective, self.inputs.repeat_interleave(k, 0),
                            self.source.repeat_interleave(k, 0), targets.repeat(len(self.x), 1)).float()
        rows = torch.cat([self.x[:, None], outputs.view(len(self.x), k, *self.x.shape[1:])], dim=1).flatten(0, 1)
        grid = make_grid(rows, nrow=k + 1, normalize=True, value_range=(-1, 1), padding=2, pad_value=1.0)
        first = "real" if self.nets.objective.noise_dim else "input"
        path.parent.mkdir(parents=True, exist_ok=True)
        _headed(grid, [first, *self.names], self.x.shape[3] + 2).save(path, quality=85)  # JPEG: noisy grids stay small
        return path

    def diversity(self) -> dict[str, float]:
        """Per label: how much generated images asked for real images' labels vary, against those real images."""
        scores = {}
        for name, (real, labels, inputs, source) in self.groups.items():
            scores[f"diversity/{name}"] = diversity(translate(self.nets.G, self.nets.objective, inputs, source, labels),
                                                    real)
        return scores


def _evenly(n: int, count: int) -> np.ndarray:
    """Up to ``count`` indices spread evenly over ``range(n)``."""
    return np.linspace(0, n - 1, min(count, n)).round().astype(np.int64)


def _headed(grid: torch.Tensor, names: list[str], column: int) -> Image.Image:
    """The (3, H, W) grid in [0, 1] as an image under a white band that names each column."""
    body = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    page = Image.new("RGB", (body.width, body.height + HEADER), "white")
    page.paste(body, (0, HEADER))
    draw, font = ImageDraw.Draw(page), ImageFont.load_default(size=10)
    for i, name in enumerate(names):
        draw.text((i * column + (column - draw.textlength(name, font=font)) / 2, 1), name, fill="black", font=font)
    return page


class CollapseWatch:
    """Warns when the critic stops separating real from fake, or the generator's output stops varying.

    ``undecided`` is the critic's adversarial loss when it cannot tell them apart (0 for WGAN)."""

    def __init__(self, undecided: float = 0.0) -> None:
        self.flat_logs, self.undecided = 0, undecided

    def update(self, step: int, metrics: dict[str, float]) -> None:
        self.flat_logs = self.flat_logs + 1 if abs(metrics["d_adv"] - self.undecided) < CRITIC_EPS else 0
        if self.flat_logs == COLLAPSE_PATIENCE:
            log.warning("generator training may have collapsed: the critic's adversarial loss has stayed within "
                        "%.0e of %.3g for %d logs (step %d); look at the sample grids", CRITIC_EPS, self.undecided,
                        COLLAPSE_PATIENCE, step)
        if metrics["fake_std"] < STD_EPS:
            log.warning("generator training may have collapsed: generated images hardly vary across the batch "
                        "(mean per-pixel std %.2e at step %d)", metrics["fake_std"], step)
        collapsed = {k.removeprefix("diversity/"): round(v, 3) for k, v in metrics.items()
                     if k.startswith("diversity/") and v < DIVERSITY_EPS}
        if collapsed:
            log.warning("mode collapse at step %d: generated images of %s vary less than %.0f%% as much as real "
                        "ones (diversity scores)", step, collapsed, 100 * DIVERSITY_EPS)


class Window:
    """Averages metrics between two log lines and times the steps in between."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.seconds = 0, 0.0

    def add(self, metrics: dict[str, float], seconds: float) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.steps += 1
        self.seconds += seconds

    def flush(self) -> dict[str, float]:
        means = {key: total / self.counts[key] for key, total in self.sums.items()}
        means["steps_per_s"] = self.steps / max(self.seconds, 1e-9)
        self.reset()
        return means


def _trainable(data: ImageSet) -> ImageSet:
    """Rows with every label present; unlabelled rows are left out, with a warning."""
    keep = np.flatnonzero(~np.isnan(data.labels).any(axis=1))
    if len(keep) == 0:
        raise ValueError("no image with labels to train the generator on: pseudo-label the unlabelled pool first")
    if len(keep) < len(data):
        log.warning("generator training: %d of %d images have missing labels and are left out",
                    len(data) - len(keep), len(data))
        return data.subset(keep)
    return data


def _resume(nets: Networks, path: Path, arch: Architecture, run: dict,
            generator: torch.Generator) -> tuple[int, list[dict[str, float]]]:
    """Restore a checkpoint's training state; returns its step and history."""
    state = read_checkpoint(path, arch)
    changed = sorted(k for k in run if k not in RESUME_FREE and state["run"].get(k) != run[k])
    if changed:
        log.warning("resuming %s with changed settings %s: the result will differ from an uninterrupted run",
                    path, changed)
    nets.load(state)
    if not set_rng_state(state["rng"], generator):
        generator.manual_seed(int(run["seed"]) + state["step"])
        log.warning("%s has no state for the training loop's generator (written by an older version): its "
                    "random draws continue from a new seed, so the result will differ from an uninterrupted run",
                    path)
    log.info("resuming generator training from %s at step %d", path, state["step"])
    return state["step"], state["history"]


def _report(cfg: GeneratorConfig, step: int, record: dict[str, float], image: Path | None, watch: CollapseWatch,
            on_log: LogCallback | None) -> None:
    losses = " ".join(f"{key} {value:.4g}" for key, value in record.items())
    log.info("generator %s step %d/%d %s", cfg.kind, step, cfg.steps, losses)
    watch.update(step, record)
    if on_log:
        on_log(step, record, image)


def train_gan(data: ImageSet, cfg: GeneratorConfig, seed: int, device: torch.device, out_dir: Path,
                    on_log: LogCallback | None = None) -> TrainedGenerator:
    """Train on ``data``'s labelled rows, checkpointing into ``out_dir``; resumes a checkpoint found there."""
    data = _trainable(data)
    arch = Architecture.of(cfg, data)
    out_dir, path = Path(out_dir), Path(out_dir) / CHECKPOINT
    run = {**cfg.model_dump(mode="json"), "seed": seed}
    with seeded(seed):  # the weights' initial draws, safe from tasks on other threads
        nets = Networks(arch, cfg, device)
    rng = torch.Generator().manual_seed(seed)  # every later draw: batches, targets, penalty mixes
    step, history = _resume(nets, path, arch, run, rng) if path.is_file() else (0, [])
    if step > cfg.steps:
        raise ValueError(f"{path} is at step {step}, past generator.steps ({cfg.steps}): use a new output folder")
    images = to_tensor(data.images, device)
    labels = nets.objective.labels(torch.from_numpy(data.labels)).to(device)
    present = label_types.label_type(arch.label_type).present(data.labels)
    probe = Probe(nets, images, labels, present, list(arch.label_columns), seed)
    weights = real_weights(present, list(arch.label_columns), cfg.real_sampling)
    categorical = nets.objective.targets == "category"
    window, watch = Window(), CollapseWatch(nets.adversarial.undecided)
    log.info("training %s on %d images, on %s%s, steps %d..%d", arch.describe(), len(data), device,
             " with mixed precision" if nets.scaler_g.is_enabled() else "", step + 1, cfg.steps)
    for step in range(step + 1, cfg.steps + 1):
        start = time.perf_counter()
        nets.set_lr(learning_rate(cfg, step))
        index = (torch.randint(len(data), (cfg.batch_size,), generator=rng) if weights is None else
                 torch.multinomial(weights, cfg.batch_size, replacement=True, generator=rng)).to(device)
        x, source = scale(images[index]), labels[index]
        target = sample_targets(source, cfg.target_sampling, categorical, rng)
        metrics = nets.d_step(x, source, target, rng)
        if step % cfg.n_critic == 0:
            metrics |= nets.g_step(x, source, target, rng)
        window.add(metrics, time.perf_counter() - start)
        last = step == cfg.steps
        image, scores = None, {}
        if step % cfg.sample_every == 0 or last:
            image = probe.samples(cfg.intensity, out_dir / "samples" / f"step_{step:06d}.jpg")
            scores = probe.diversity()
        if step % cfg.log_every == 0 or image is not None:
            record = {**window.flush(), "lr": learning_rate(cfg, step), **scores}
            history.append({"step": float(step), **record})
            _report(cfg, step, record, image, watch, on_log)
        if step % cfg.checkpoint_every == 0 or last:
            save_checkpoint(path, {**nets.state(), "step": step, "rng": rng_state(rng), "run": run,
                                   "architecture": arch.as_dict(), "history": history})
    return load_generator(path, device, arch)
