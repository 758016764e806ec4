"""What the machine can do: dense float32 matmul rate, and a model's training FLOPs per image."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Dense float32 matmul rate on the CPU, GFLOP/s (the 'available compute' reference)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def training_flops_per_image(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Forward + backward FLOPs for one image, counted by torch's flop counter."""
    x = torch.randn(8, *shape)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 8
