"""Train the multi-label AU classifier with early stopping, and predict with it.

Images stay uint8 in one tensor on the device and are scaled per batch, so an epoch costs
only the network's compute: no per-step decoding and no DataLoader workers to feed.
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
from ausynth.models.au_classifier import AUClassifier
from ausynth.tasks.device import seed_everything
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.metrics import binarize, per_au_metrics, summary

log = logging.getLogger("ausynth")

EpochCallback = Callable[[int, dict[str, float]], None]


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


def _loss_fn(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "mse":  # the thesis: MSE between sigmoid outputs and (possibly soft) targets
        return lambda logits, target: nn.functional.mse_loss(torch.sigmoid(logits), target)
    return nn.functional.binary_cross_entropy_with_logits


def _optimizer(cfg: ClassifierConfig, params) -> torch.optim.Optimizer:
    cls = torch.optim.RAdam if cfg.optimizer == "radam" else torch.optim.Adam
    return cls(params, lr=cfg.lr)


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray | torch.Tensor, device: torch.device,
                  batch_size: int = 500) -> np.ndarray:
    """Sigmoid scores (N, K) for uint8 images, in evaluation mode."""
    model.eval()
    data = images if isinstance(images, torch.Tensor) else to_tensor(images, device)
    out = [torch.sigmoid(model(scale(data[i:i + batch_size].to(device)))).cpu()
           for i in range(0, len(data), batch_size)]
    return torch.cat(out).numpy()


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


def _validate(model, loss_fn, images, targets, labels, names, device, threshold) -> dict[str, float]:
    scores = predict_proba(model, images, device)
    val_loss = float(loss_fn(torch.logit(torch.from_numpy(scores).clamp(1e-6, 1 - 1e-6)), targets.cpu()))
    table = per_au_metrics(labels, binarize(scores, threshold), names)
    return {"val_loss": val_loss, "val_f1": summary(table)["f1_mean"]}


def train_classifier(train: ImageSet, val: ImageSet, cfg: ClassifierConfig, seed: int, device: torch.device,
                     on_epoch: EpochCallback | None = None, desc: str = "classifier") -> TrainedClassifier:
    """Fit on ``train``; stop when validation loss has not improved for ``patience`` epochs.

    The weights of the best validation epoch are restored before returning.
    """
    seed_everything(seed)
    model = AUClassifier(len(train.label_columns), train.image_shape[-1], cfg.backbone, cfg.width).to(device)
    optimizer = _optimizer(cfg, model.parameters())
    loss_fn = _loss_fn(cfg.loss)
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
                                                        train.label_columns, device, cfg.threshold)}
        history.append(record)
        if record["val_loss"] < best_loss:
            best_loss, best_epoch, best_state = record["val_loss"], epoch, copy.deepcopy(model.state_dict())
        log.info("%s epoch %d/%d train_loss %.4f val_loss %.4f val_f1 %.3f (%.0f img/s)", desc, epoch,
                 cfg.max_epochs, train_loss, record["val_loss"], record["val_f1"], seen / elapsed)
        if on_epoch:
            on_epoch(epoch, record)
        if epoch - best_epoch >= cfg.patience:
            log.info("%s early stop at epoch %d, best epoch %d", desc, epoch, best_epoch)
            break
    model.load_state_dict(best_state)
    return TrainedClassifier(model, best_epoch, history, seen / max(elapsed, 1e-9))
