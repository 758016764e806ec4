"""Train the classifier with early stopping, and predict with it.

Images stay uint8 in one tensor on the device and are scaled per batch, so an epoch costs
only the network's compute: no per-step decoding and no DataLoader workers to feed.

Head and loss follow the label type (the training set's ``meta["label_type"]`` unless given):

- ``au_presence`` / ``au_intensity``: sigmoid outputs; ``cfg.loss`` "mse" (the thesis: MSE
  between sigmoid outputs and the, possibly soft, targets) or "bce";
- ``emotion``: softmax over the ``emotion_<class>`` outputs, cross-entropy against one-hot or
  soft targets (each row normalised to sum 1; ``cfg.loss`` does not apply);
- ``valence_arousal``: tanh-bounded regression, MSE.

NaN targets are unlabelled and masked out of the loss (per entry; per row for emotions), so
partially labelled rows still teach the outputs they have. The validation record holds
``val_loss`` (the early-stopping monitor) and the label type's scores (``MONITOR``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ausynth.configs.schema import ClassifierConfig
from ausynth.models.au_classifier import AUClassifier, activate, check_label_type
from ausynth.tasks.device import seed_everything
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.metrics import evaluate_predictions

log = logging.getLogger("ausynth")

EpochCallback = Callable[[int, dict[str, float]], None]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Per label type: validation record key -> flat metric of ``evaluate_predictions``.
MONITOR = {
    "au_presence": {"val_f1": "f1_mean"},
    "au_intensity": {"val_ccc": "ccc_mean", "val_rmse": "rmse_mean"},
    "emotion": {"val_accuracy": "accuracy", "val_f1": "f1_macro"},
    "valence_arousal": {"val_ccc": "ccc_mean", "val_rmse": "rmse_mean"},
}


@dataclass
class TrainedClassifier:
    model: AUClassifier
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    images_per_second: float = 0.0


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, C, H, W) on the device; scaled later, per batch."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


def scale(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the generators' tanh outputs share."""
    return batch.float().div_(127.5).sub_(1.0)


def infer_label_type(columns: list[str]) -> str:
    """The label type column names imply: ``emotion_*`` columns, ``valence``/``arousal``, else AU presence
    (names cannot tell presence from intensity)."""
    if columns and all(c.startswith("emotion_") for c in columns):
        return "emotion"
    if columns and set(columns) <= {"valence", "arousal"}:
        return "valence_arousal"
    return "au_presence"


def label_type_of(imageset: ImageSet, label_type: str | None = None) -> str:
    """``label_type`` if given, else the set's ``meta["label_type"]``, else what its columns imply;
    an error when it contradicts the columns (e.g. emotion columns trained as AUs)."""
    chosen = check_label_type(label_type or imageset.meta.get("label_type") or infer_label_type(imageset.label_columns))
    implied = infer_label_type(imageset.label_columns)
    if (chosen in ("emotion", "valence_arousal") or implied in ("emotion", "valence_arousal")) and chosen != implied:
        raise ValueError(f"label type {chosen!r} does not fit the label columns {imageset.label_columns} "
                         f"(they look like {implied!r})")
    return chosen


def _masked_mean(elementwise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the labelled entries; 0 (with a gradient path) when none is labelled."""
    mask = mask.to(elementwise.dtype)
    return (elementwise * mask).sum() / mask.sum().clamp_min(1.0)


def _loss_fn(kind: str, label_type: str = "au_presence") -> LossFn:
    """The loss of raw head outputs against targets that may hold NaN (unlabelled)."""
    check_label_type(label_type)
    if label_type == "emotion":
        return _soft_cross_entropy
    if label_type == "valence_arousal":
        squash, kind = torch.tanh, "mse"
    else:
        squash = torch.sigmoid

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = ~torch.isnan(target)
        target = torch.where(labelled, target, torch.zeros_like(target))
        if kind == "mse":  # the thesis: MSE between sigmoid outputs and (possibly soft) targets
            elementwise = (squash(logits) - target) ** 2
        else:
            elementwise = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return _masked_mean(elementwise, labelled)

    return loss


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the softmax against one-hot or soft rows; rows with NaN or no mass are skipped."""
    usable = ~torch.isnan(target).any(dim=1)
    target = torch.nan_to_num(target, nan=0.0).clamp_min(0.0)
    mass = target.sum(dim=1)
    usable &= mass > 0
    target = target / mass.clamp_min(1e-12)[:, None]
    per_row = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1)
    return _masked_mean(per_row, usable)


def _optimizer(cfg: ClassifierConfig, params) -> torch.optim.Optimizer:
    cls = torch.optim.RAdam if cfg.optimizer == "radam" else torch.optim.Adam
    return cls(params, lr=cfg.lr)


@torch.no_grad()
def _outputs(model: nn.Module, images: np.ndarray | torch.Tensor, device: torch.device,
             batch_size: int = 500) -> torch.Tensor:
    """Raw head outputs (N, K) on the CPU for uint8 images, in evaluation mode."""
    model.eval()
    data = images if isinstance(images, torch.Tensor) else to_tensor(images, device)
    out = [model(scale(data[i:i + batch_size].to(device))).cpu() for i in range(0, len(data), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.head.out_features)


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray | torch.Tensor, device: torch.device,
                  batch_size: int = 500, label_type: str | None = None) -> np.ndarray:
    """Predictions (N, K) for uint8 images, in evaluation mode, as the label type wants them:
    sigmoid scores (AU presence, AU intensity 0..1), softmax probabilities (emotion), or values in
    [-1, 1] (valence/arousal). ``label_type`` defaults to the model's own (AU presence for a model
    without one)."""
    label_type = label_type or getattr(model, "label_type", "au_presence")
    return activate(_outputs(model, images, device, batch_size), label_type).numpy()


def _run_epoch(model, optimizer, loss_fn, images, targets, batch_size, generator) -> float:
    model.train()
    order = torch.randperm(len(images), generator=generator).to(images.device)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        loss = loss_fn(model(scale(images[idx])), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(order)


def _validate(model, loss_fn, images, targets, labels, names, device, threshold,
              label_type: str = "au_presence") -> dict[str, float]:
    logits = _outputs(model, images, device)
    val_loss = float(loss_fn(logits, targets.cpu()))
    _, flat = evaluate_predictions(label_type, labels, activate(logits, label_type).numpy(), names, threshold)
    return {"val_loss": val_loss, **{key: flat[name] for key, name in MONITOR[label_type].items() if name in flat}}


def train_classifier(train: ImageSet, val: ImageSet, cfg: ClassifierConfig, seed: int, device: torch.device,
                     on_epoch: EpochCallback | None = None, desc: str = "classifier",
                     label_type: str | None = None) -> TrainedClassifier:
    """Fit on ``train``; stop when validation loss has not improved for ``patience`` epochs.

    ``label_type`` (default: ``train.meta["label_type"]``, else implied by the label columns)
    picks the head's activation and the loss; the returned model carries it (``model.label_type``),
    so ``predict_proba`` returns the right kind of output. The weights of the best validation
    epoch are restored before returning.
    """
    label_type = label_type_of(train, label_type)
    if val.label_columns != train.label_columns:
        raise ValueError(f"validation labels {val.label_columns} differ from training labels {train.label_columns}")
    seed_everything(seed)
    model = AUClassifier(len(train.label_columns), train.image_shape[-1], cfg.backbone, cfg.width,
                         label_type=label_type).to(device)
    optimizer = _optimizer(cfg, model.parameters())
    loss_fn = _loss_fn(cfg.loss, label_type)
    images, targets = to_tensor(train.images, device), torch.from_numpy(train.labels).to(device)
    val_images, val_labels = to_tensor(val.images, device), val.labels
    val_targets = torch.from_numpy(val_labels)
    generator = torch.Generator().manual_seed(seed)
    best_loss, best_state, best_epoch, history = float("inf"), None, 0, []
    seen, elapsed = 0, 0.0
    for epoch in range(1, cfg.max_epochs + 1):
        start = time.perf_counter()
        train_loss = _run_epoch(model, optimizer, loss_fn, images, targets, cfg.batch_size, generator)
        elapsed += time.perf_counter() - start
        seen += len(images)
        record = {"train_loss": train_loss, **_validate(model, loss_fn, val_images, val_targets, val_labels,
                                                        train.label_columns, device, cfg.threshold, label_type)}
        history.append(record)
        if record["val_loss"] < best_loss:
            best_loss, best_epoch, best_state = record["val_loss"], epoch, copy.deepcopy(model.state_dict())
        scores = " ".join(f"{k} {v:.3f}" for k, v in record.items() if k not in ("train_loss", "val_loss"))
        log.info("%s epoch %d/%d train_loss %.4f val_loss %.4f %s (%.0f img/s)", desc, epoch,
                 cfg.max_epochs, train_loss, record["val_loss"], scores, seen / elapsed)
        if on_epoch:
            on_epoch(epoch, record)
        if epoch - best_epoch >= cfg.patience:
            log.info("%s early stop at epoch %d, best epoch %d", desc, epoch, best_epoch)
            break
    model.load_state_dict(best_state)
    return TrainedClassifier(model, best_epoch, history, seen / max(elapsed, 1e-9))
