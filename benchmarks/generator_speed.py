"""Training speed of the generators at the toy size, against this machine's matmul rate.

For each generator: a few warm-up training steps (one critic and one generator update each,
n_critic 1), then timed steps on random 96x96 batches of 16; prints steps/s, images/s, the
model FLOPs of one step (counted with torch's FlopCounterMode) and what share of the device's
dense float32 matmul rate (torch.mm of 2048x2048, measured in the same run) that is. The EM and
StarGAN train with WGAN-GP, the cgan with ``--cgan-loss`` (its default shape, generator.cgan).
Training runs in the precision ``generator.amp`` gives on the device (``--no-amp``: float32), as
in a comparison. On a GPU, the paper-size networks: ``--device cuda --base-channels 64``.

    python benchmarks/generator_speed.py [--size 96] [--batch 16] [--steps 10] [--base-channels 16]
                                         [--device auto] [--no-amp] [--kinds em stargan]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compute import matmul_gflops, synchronize  # noqa: E402

from ausynth.configs.generator import GeneratorConfig  # noqa: E402
from ausynth.tasks.device import mixed_precision, resolve_device  # noqa: E402
from ausynth.tasks.gan_training import Networks  # noqa: E402
from ausynth.tasks.generator_kinds import Architecture, generator_kind  # noqa: E402

N_LABELS = 9


def train_step(nets: Networks, x: torch.Tensor, labels: torch.Tensor) -> None:
    target = labels[torch.randperm(len(labels))]
    nets.d_step(x, labels, target)
    nets.g_step(x, labels, target)


def measure(kind: str, args: argparse.Namespace) -> dict[str, float]:
    cfg = GeneratorConfig(kind=kind, base_channels=args.base_channels, n_res_blocks=args.res_blocks,
                          batch_size=args.batch, n_critic=1, amp=args.amp,
                          adversarial_loss=args.cgan_loss if kind == "cgan" else "wgan_gp")
    arch = Architecture(kind, "au_presence", args.base_channels, args.res_blocks, (args.size, args.size, 1),
                        tuple(f"AU{k}" for k in range(1, N_LABELS + 1)),
                        tuple(sorted(generator_kind(kind).options(cfg).items())))
    nets = Networks(arch, cfg, args.device)
    x = torch.rand(args.batch, 1, args.size, args.size, device=args.device) * 2 - 1
    labels = (torch.rand(args.batch, N_LABELS, device=args.device) < 0.2).float()
    for _ in range(args.warmup):
        train_step(nets, x, labels)
    with FlopCounterMode(display=False) as counter:
        train_step(nets, x, labels)
    synchronize(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(nets, x, labels)
    synchronize(args.device)
    seconds = (time.perf_counter() - start) / args.steps
    return {"steps_per_s": 1 / seconds, "images_per_s": args.batch / seconds,
            "gflop_per_step": counter.get_total_flops() / 1e9,
            "gflops": counter.get_total_flops() / 1e9 / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--base-channels", type=int, default=GeneratorConfig().base_channels)
    parser.add_argument("--res-blocks", type=int, default=GeneratorConfig().n_res_blocks)
    parser.add_argument("--cgan-loss", default="hinge", choices=["bce", "wgan_gp", "hinge"])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="train in float32")
    parser.add_argument("--kinds", nargs="+", default=["em", "stargan", "cgan"], choices=["em", "stargan", "cgan"])
    args = parser.parse_args()
    args.device = resolve_device(args.device)
    torch.manual_seed(0)
    peak = matmul_gflops(device=args.device)
    precision = mixed_precision(args.device, args.amp) or torch.float32
    print(f"torch {torch.__version__} on {args.device} ({device_name(args.device)}), {precision}, "
          f"{args.size}x{args.size}x1 images, batch {args.batch}, base_channels {args.base_channels}, "
          f"n_res_blocks {args.res_blocks}")
    print(f"dense float32 matmul (torch.mm 2048x2048): {peak:.1f} GFLOP/s")
    print(f"{'generator':<10} {'steps/s':>8} {'images/s':>9} {'GFLOP/step':>11} {'GFLOP/s':>8} {'of matmul':>10}")
    for kind in args.kinds:
        r = measure(kind, args)
        print(f"{kind:<10} {r['steps_per_s']:>8.2f} {r['images_per_s']:>9.1f} {r['gflop_per_step']:>11.1f} "
              f"{r['gflops']:>8.1f} {r['gflops'] / peak:>9.0%}")
    print(f"matmul rate re-measured after the runs: {matmul_gflops(device=args.device):.1f} GFLOP/s (a large "
          "change means the machine was busy)")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{torch.get_num_threads()} threads"


if __name__ == "__main__":
    main()
