"""What the machine can do: dense float32 matmul rate, and a model's training FLOPs per image."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_gflops(n: int = 2048, repeats: int = 10, device: torch.device = torch.device("cpu")) -> float:
    """Dense float32 matmul rate on ``device``, GFLOP/s (the 'available compute' reference)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_flops_per_image(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Forward + backward FLOPs for one image, counted by torch's flop counter."""
    x = torch.randn(8, *shape)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 8
