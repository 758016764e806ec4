"""Device choice, seeding and thread control, shared by every stage that runs torch."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import numpy as np
import torch

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_GLOBAL_RNG = threading.RLock()  # held while a block seeds and draws from the process-wide RNGs


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` means CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(name)


def mixed_precision(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype that ``amp: true`` means on ``device``, or None for float32.

    float16 on CUDA (trained with loss scaling). bfloat16 on a CPU that computes it natively
    (AVX512-BF16 or AMX): there the classifier trains 1.8-2.1x and the EM 1.6x faster than in
    float32 at 1 thread (benchmarks/cpu_formats.py); a CPU without either would emulate bfloat16,
    slower than float32, so it keeps float32, as does any other device.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return torch.bfloat16
    return None


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """The loss scaler for training in ``dtype``: active for float16 only (bfloat16 has float32's range);
    otherwise a pass-through, so a training loop calls it the same way in every precision."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on the device's type; no change where ``dtype`` is None.

    Without autocast's weight cache: with it, the cgan's generator came out different from run to run
    on the threads runner (2 of 3 runs; likely a cached low-precision copy of a weight outliving its
    optimiser step while another task held an autocast context), and without it equal to the
    sequential run's (3 of 3). Each of our contexts runs one forward pass, so the cache saved nothing.
    """
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False) if dtype is not None else nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed python's, numpy's and torch's global RNGs and hold them while the block runs.

    torch's default generator is one per process, shared by every thread. Tasks that run on
    threads of one process (``execution.task_runner: threads``) would otherwise interleave their
    draws: one task seeds, another seeds, the first initialises its network from the second's
    seed. Code that must draw from the global RNGs (a network's weight initialisation) does it
    inside this block; longer random streams (batches, targets) use their own ``torch.Generator``.
    """
    with _GLOBAL_RNG:
        seed_everything(seed)
        yield


def use_threads(count: int) -> None:
    """Let torch (intra-op), OpenMP, MKL and numpy's BLAS use ``count`` threads in this process.

    torch's setting applies at once to every thread of the process; the environment variables
    reach the processes this one starts; BLAS libraries already loaded (numpy's OpenBLAS) are
    limited through threadpoolctl.
    """
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(count)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it only torch is limited
        return
    threadpool_limits(limits=count, user_api="blas")
