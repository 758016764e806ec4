"""Train the classifier with early stopping, and predict with it.

Images stay uint8 in one tensor on the device and are scaled per batch, so an epoch costs
only the network's compute: no per-step decoding and no DataLoader workers to feed.

The label type (``tasks/label_types.py``; the training set's ``meta["label_type"]`` unless given)
picks the head's activation and the loss. NaN targets are unlabelled and masked out of the loss,
so partially labelled rows still teach the outputs they have. The validation record holds
``val_loss`` and the label type's validation scores.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ausynth.configs.schema import ClassifierConfig
from ausynth.models.au_classifier import AUClassifier
from ausynth.tasks import label_types
from ausynth.tasks.device import autocast, grad_scaler, mixed_precision, seeded
from ausynth.tasks.imageset import ImageSet

log = logging.getLogger("ausynth")

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainedClassifier:
    """A trained model with the weights of its best epoch (by ``monitor``), and how training went.

    ``never_learnt``: the model predicts no AU on any validation image, or its best epoch has
    validation F1 0 (the all-negative plateau), or, for a regression, validation CCC <= 0 (no better
    than a constant); ``never_learnt_reason`` says which. A WARNING naming the run is logged too.
    """
    model: AUClassifier
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    images_per_second: float = 0.0
    epochs: int = 0  # epochs trained
    stopped_early: bool = False  # True when patience ended training before max_epochs
    monitor: str = "val_loss"  # the validation record key that picked best_epoch and stopped training
    never_learnt: bool = False
    never_learnt_reason: str = ""


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, C, H, W) on the device; scaled later, per batch."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


# Images per forward pass when predicting (validation, evaluation, the oracle): at 64 a CPU keeps the
# activations in cache, 2.3x faster than at 500 (small_cnn, 96x96, 1 thread), with equal predictions.
INFERENCE_BATCH = 64


def scale(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the generators' tanh outputs share."""
    return batch.float().div_(127.5).sub_(1.0)


def with_noise(batch: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``batch`` plus Gaussian noise of ``std`` drawn from ``generator`` (``ClassifierConfig.input_noise``)."""
    if not std:
        return batch
    return batch + std * torch.randn(batch.shape, generator=generator).to(batch.device)


def _optimizer(cfg: ClassifierConfig, params) -> torch.optim.Optimizer:
    cls = torch.optim.RAdam if cfg.optimizer == "radam" else torch.optim.Adam
    return cls(params, lr=cfg.lr)


@torch.no_grad()
def _outputs(model: nn.Module, images: np.ndarray | torch.Tensor, device: torch.device,
             batch_size: int = INFERENCE_BATCH) -> torch.Tensor:
    """Raw head outputs (N, K) on the CPU for uint8 images, in evaluation mode."""
    model.eval()
    data = images if isinstance(images, torch.Tensor) else to_tensor(images, device)
    out = [model(scale(data[i:i + batch_size].to(device))).cpu() for i in range(0, len(data), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.head.out_features)


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray | torch.Tensor, device: torch.device,
                  batch_size: int = INFERENCE_BATCH, label_type: str | None = None) -> np.ndarray:
    """Predictions (N, K) for uint8 images, in evaluation mode, as the label type wants them:
    sigmoid scores (AU presence, AU intensity 0..1), softmax probabilities (emotion), or values in
    [-1, 1] (valence/arousal). ``label_type`` defaults to the model's own (AU presence for a model
    without one)."""
    kind = label_types.label_type(label_type or getattr(model, "label_type", "au_presence"))
    return kind.activate(_outputs(model, images, device, batch_size)).numpy()


def _run_epoch(model, optimizer, loss_fn, images, targets, batch_size, generator,
               precision: torch.dtype | None, scaler: torch.amp.GradScaler, input_noise: float = 0.0) -> float:
    """One pass over the training images in a random order; the forward pass runs in ``precision``
    (autocast; None: float32), the loss in float32, the backward pass through ``scaler``
    (``device.grad_scaler``: a pass-through unless ``precision`` is float16). ``input_noise``: the std
    of the Gaussian noise added to each scaled batch, drawn from ``generator`` (so a seed repeats it)."""
    model.train()
    order = torch.randperm(len(images), generator=generator).to(images.device)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        with autocast(images.device, precision):
            logits = model(with_noise(scale(images[idx]), input_noise, generator))
        loss = loss_fn(logits.float(), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(idx)
    return total / len(order)


def _validate(model, loss_fn, images, targets, labels, names, device, threshold,
              kind: label_types.LabelType) -> dict[str, float]:
    """The epoch's validation record: ``val_loss`` and the label type's validation scores.

    A small validation split often lacks positives of a rare AU; the metrics' 'cannot be scored'
    warning is silenced here (it would repeat every epoch) and still shows at test time."""
    logits = _outputs(model, images, device)
    val_loss = float(loss_fn(logits, targets.cpu()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*cannot be scored")
        _, flat = kind.evaluate(labels, kind.activate(logits).numpy(), names, threshold)
    return {"val_loss": val_loss, **{key: flat[name] for key, name in kind.validation_scores.items() if name in flat}}


MINIMISED = ("val_loss", "val_rmse")  # monitored keys where lower is better; for the others higher is


def _monitor_key(cfg: ClassifierConfig, kind: label_types.LabelType) -> str:
    """``cfg.monitor`` where the label type's validation record has it, else that type's first
    validation score (``val_f1`` asked of a regression monitors ``val_ccc``)."""
    if cfg.monitor == "val_loss" or cfg.monitor in kind.validation_scores:
        return cfg.monitor
    key = next(iter(kind.validation_scores), "val_loss")
    log.info("monitor %s does not apply to %s labels: monitoring %s instead", cfg.monitor, kind.name, key)
    return key


def _never_learnt(model, kind: label_types.LabelType, best: dict[str, float], val_images: torch.Tensor,
                  device: torch.device, threshold: float) -> str:
    """Why the restored model counts as never having learnt; '' when it learnt something."""
    if best.get("val_f1", 1.0) <= 0.0:
        return "its best epoch has validation F1 0 (the all-negative plateau)"
    if kind.name == "au_presence":
        scores = kind.activate(_outputs(model, val_images, device)).numpy()
        if not (scores >= threshold).any():
            return f"it predicts no AU on any of the {len(scores)} validation images"
    if best.get("val_ccc", 1.0) <= 0.0:
        return f"its best validation CCC is {best['val_ccc']:.3f}: no better than a constant"
    return ""


def train_classifier(train: ImageSet, val: ImageSet, cfg: ClassifierConfig, seed: int, device: torch.device,
                     on_epoch: EpochCallback | None = None, desc: str = "classifier",
                     label_type: str | None = None) -> TrainedClassifier:
    """Fit on ``train`` with early stopping on ``cfg.monitor`` (``fit_with_early_stopping``).

    ``label_type`` (default: ``train.meta["label_type"]``, else implied by the label columns)
    picks the head's activation and the loss; the returned model carries it (``model.label_type``),
    so ``predict_proba`` returns the right kind of output.
    """
    kind = label_types.of(train, label_type)
    check_columns(train, val)
    with seeded(seed):  # the initial weights, safe from tasks on other threads drawing at the same time
        model = AUClassifier(len(train.label_columns), train.image_shape[-1], cfg.backbone, cfg.width,
                             label_type=kind.name, input_size=cfg.input_size)
    # channels-last: 2.0x (batch 32) and 1.5x (batch 100) the training images/s of the default layout on
    # this CPU (benchmarks/cpu_formats.py); a 1-channel batch already is in that layout.
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, model.parameters())
    loss_fn = kind.loss(cfg.loss)
    images, targets = to_tensor(train.images, device), torch.from_numpy(train.labels).to(device)
    generator = torch.Generator().manual_seed(seed)
    precision = mixed_precision(device, cfg.amp)
    scaler = grad_scaler(device, precision)

    def run_epoch() -> dict[str, float]:
        return {"train_loss": _run_epoch(model, optimizer, loss_fn, images, targets, cfg.batch_size, generator,
                                         precision, scaler, cfg.input_noise)}

    return fit_with_early_stopping(model, run_epoch, len(images), val, cfg, loss_fn, on_epoch, desc)


def check_columns(train: ImageSet, val: ImageSet) -> None:
    if val.label_columns != train.label_columns:
        raise ValueError(f"validation labels {val.label_columns} differ from training labels {train.label_columns}")


def fit_with_early_stopping(model: AUClassifier, run_epoch: Callable[[], dict[str, float]], images_per_epoch: int,
                            val: ImageSet, cfg: ClassifierConfig, loss_fn: label_types.LossFn,
                            on_epoch: EpochCallback | None = None, desc: str = "classifier") -> TrainedClassifier:
    """Call ``run_epoch`` (one training pass; its record holds ``train_loss``) until early stopping; restore
    the best epoch's weights of ``model``. Every classifier the comparison trains goes through this rule,
    whatever its epoch does (the standard one, the semi-supervised GAN's discriminator).

    Early stopping: an epoch *improves* when the monitored value (``val_loss``/``val_rmse``: lower
    is better; ``val_f1``/``val_accuracy``/``val_ccc``: higher) beats the value of the last improving
    epoch by more than ``cfg.min_delta`` (absolute, in the monitor's units). Training stops once
    ``cfg.patience`` epochs have passed without an improvement, but never before ``cfg.min_epochs``.
    The weights restored are those of the best epoch by the monitored value alone (any margin;
    for a score, ties go to the lower ``val_loss``). With ``monitor: val_loss``, ``min_delta: 0``
    and ``min_epochs: 1`` this is the thesis' rule: stop when validation loss has not fallen for
    ``patience`` epochs and keep the epoch of lowest validation loss.

    ``val_loss`` is ``loss_fn`` on the validation split. A monitor the label type has no score for
    falls back to that type's first validation score (logged). A model that never learnt (see
    ``TrainedClassifier``) is flagged and logged as a WARNING naming ``desc``.
    """
    kind = label_types.label_type(model.label_type)
    device = next(model.parameters()).device
    val_images, val_labels = to_tensor(val.images, device), val.labels
    val_targets = torch.from_numpy(val_labels)
    monitor = _monitor_key(cfg, kind)
    sign = 1.0 if monitor in MINIMISED else -1.0  # sign * value: lower is better
    best, best_state, best_epoch, history = (float("inf"), float("inf")), None, 0, []
    reference, improved_at, stopped_early = float("inf"), 0, False
    seen, elapsed = 0, 0.0
    for epoch in range(1, cfg.max_epochs + 1):
        start = time.perf_counter()
        trained = run_epoch()
        elapsed += time.perf_counter() - start
        seen += images_per_epoch
        record = {**trained, **_validate(model, loss_fn, val_images, val_targets, val_labels, val.label_columns,
                                         device, cfg.threshold, kind)}
        history.append(record)
        value = sign * record[monitor]
        value = float("inf") if math.isnan(value) else value  # undefined (e.g. F1 with no positive): worst
        if (value, record["val_loss"]) < best:  # ties go to the lower val_loss; a NaN val_loss never wins
            best, best_epoch, best_state = (value, record["val_loss"]), epoch, copy.deepcopy(model.state_dict())
        if value < reference - cfg.min_delta:
            reference, improved_at = value, epoch
        scores = " ".join(f"{k} {v:.3f}" for k, v in record.items() if k not in ("train_loss", "val_loss"))
        log.info("%s epoch %d/%d train_loss %.4f val_loss %.4f %s (%.0f img/s)", desc, epoch,
                 cfg.max_epochs, record["train_loss"], record["val_loss"], scores, seen / elapsed)
        if on_epoch:
            on_epoch(epoch, record)
        if epoch >= cfg.min_epochs and epoch - improved_at >= cfg.patience:
            stopped_early = epoch < cfg.max_epochs
            break
    if best_state is None:  # every epoch's monitored value was NaN: keep the last weights
        best_epoch = len(history)
    else:
        model.load_state_dict(best_state)
    log.info("%s %s epoch %d; best epoch %d by %s (%s)", desc, "stopped early at" if stopped_early else "trained to",
             len(history), best_epoch, monitor, " ".join(f"{k} {v:.4f}" for k, v in history[best_epoch - 1].items()))
    result = TrainedClassifier(model, best_epoch, history, seen / max(elapsed, 1e-9), epochs=len(history),
                               stopped_early=stopped_early, monitor=monitor)
    reason = _never_learnt(model, kind, history[best_epoch - 1], val_images, device, cfg.threshold)
    if reason:
        result.never_learnt, result.never_learnt_reason = True, reason
        log.warning("NEVER LEARNT: classifier %s did not learn: %s (best epoch %d of %d). Its test figures "
                    "are those of a model that predicts (almost) nothing; check the loss, lr and min_epochs.",
                    desc, reason, best_epoch, len(history))
    return result
