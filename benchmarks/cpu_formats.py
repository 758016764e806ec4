"""Do channels-last memory format, torch.compile or bfloat16 autocast speed up training on this CPU?

Times training steps of the AU classifier (small_cnn, 96x96x1, the default batch 32 and the
thesis' batch 100) and of the EM and the cgan (one critic and one generator update, batch 16,
base_channels 8; the EM with WGAN-GP, the cgan with bce as toy-quick trains it) in five forms:
eager (the default contiguous layout, not compiled), channels-last, compiled (``torch.compile``,
inductor), both, and channels-last with bfloat16 autocast (what ``amp: true`` means on a CPU with
native bfloat16, and what ausynth trains in there; the WGAN-GP penalty stays float32). The forms
take turns, round after round, so a change in the machine's load hits them alike; each figure
is the median over rounds, and each ratio is against eager measured in the same run.

Critics are never compiled: the WGAN-GP penalty differentiates through the critic's gradient
(double backward), which torch.compile does not support; only the generators are.

    python benchmarks/cpu_formats.py [--rounds 5] [--steps 10] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ausynth.configs.generator import GeneratorConfig
from ausynth.models.au_classifier import AUClassifier
from ausynth.tasks.device import autocast
from ausynth.tasks.gan_training import Networks
from ausynth.tasks.generator_kinds import Architecture, generator_kind

N_AUS, SIZE, CPU = 9, 96, torch.device("cpu")
FORMS = {"eager": (False, False, False), "channels-last": (True, False, False), "compiled": (False, True, False),
         "channels-last + compiled": (True, True, False), "channels-last + bfloat16": (True, False, True)}


def _layout(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _prepare(model: nn.Module, channels_last: bool, compiled: bool) -> nn.Module:
    model = model.to(memory_format=_layout(channels_last))
    return torch.compile(model) if compiled else model


def classifier_step(batch: int, channels_last: bool, compiled: bool, bf16: bool) -> Callable[[], None]:
    """One training step of the classifier as tasks/train_classifier.py takes it (Adam, BCE on logits)."""
    model = AUClassifier(N_AUS, 1, "small_cnn", 16)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = _prepare(model, channels_last, compiled)
    x = torch.rand(batch, 1, SIZE, SIZE) * 2 - 1
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = (torch.rand(batch, N_AUS) < 0.2).float()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast(CPU, torch.bfloat16 if bf16 else None):
            logits = net(x)
        nn.functional.binary_cross_entropy_with_logits(logits.float(), y).backward()
        optimiser.step()

    return step


def gan_step(kind: str, batch: int, channels_last: bool, compiled: bool, bf16: bool) -> Callable[[], None]:
    """One critic and one generator update, as tasks/gan_training.py takes them."""
    cfg = GeneratorConfig(kind=kind, batch_size=batch, adversarial_loss="bce" if kind == "cgan" else "wgan_gp")
    arch = Architecture(kind, "au_presence", cfg.base_channels, cfg.n_res_blocks, (SIZE, SIZE, 1),
                        tuple(f"AU{k}" for k in range(1, N_AUS + 1)),
                        tuple(sorted(generator_kind(kind).options(cfg).items())))
    nets = Networks(arch, cfg, CPU)
    nets.autocast = lambda: autocast(CPU, torch.bfloat16 if bf16 else None)
    nets.G = _prepare(nets.G, channels_last, compiled)
    nets.D = nets.D.to(memory_format=_layout(channels_last))
    x = torch.rand(batch, 1, SIZE, SIZE) * 2 - 1
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    labels = (torch.rand(batch, N_AUS) < 0.2).float()
    rng = torch.Generator().manual_seed(0)

    def step() -> None:
        target = labels[torch.randperm(batch, generator=rng)]
        nets.d_step(x, labels, target, rng)
        nets.g_step(x, labels, target, rng)

    return step


def timed(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per form and round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = {f"classifier, batch {b}": (classifier_step, b) for b in (32, 100)}
    cases |= {f"{kind} generator, batch 16": (partial(gan_step, kind), 16) for kind in ("em", "cgan")}
    print(f"torch {torch.__version__}, {args.threads} threads, {SIZE}x{SIZE}x1 images; median of {args.rounds} "
          f"rounds of {args.steps} steps, forms in turn")
    for case, (make, batch) in cases.items():
        steps = {form: make(batch, *flags) for form, flags in FORMS.items()}
        for step in steps.values():  # warm-up, and compilation, before any timing
            for _ in range(3):
                step()
        seconds: dict[str, list[float]] = {form: [] for form in FORMS}
        for _ in range(args.rounds):
            for form, step in steps.items():
                seconds[form].append(timed(step, args.steps))
        eager = statistics.median(seconds["eager"])
        print(f"\n{case}")
        print(f"  {'form':<26}{'images/s':>10}{'vs eager':>10}{'spread':>9}")
        for form, values in seconds.items():
            median = statistics.median(values)
            spread = (max(values) - min(values)) / median
            print(f"  {form:<26}{batch / median:>10.0f}{eager / median:>9.2f}x{spread:>8.0%}")


if __name__ == "__main__":
    main()
