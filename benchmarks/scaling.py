"""Scaling: one comparison on each task runner, and classifier training beside a busy neighbour.

1. **Runners.** The comparison ``make run`` runs (toy-quick: all four strategies, 2 seeds, the
   1200-step cgan) with ``execution.task_runner`` sequential, threads and dask (``workers`` 2,
   ``threads_per_task`` 1), each in a fresh workspace and its own process, timed from the flow's
   call to its return (Dask's cluster start-up included); ``--set`` reduces it (e.g.
   ``--set classifier.max_epochs=8 --set generator.steps=60``, the size measured before
   2026-11-24); ``--config`` runs another (e.g. toy-paper-3k-medium: the thesis benchmark's comparison of
   one setting, 5 seeds at thesis sizes). Also sequential with ``threads_per_task`` = all cores: how every run executed
   before the execution settings existed.
   Prints wall times, the ratio to sequential and whether the comparison tables are identical.
2. **A busy neighbour.** One classifier training (toy data, thesis network) in a fresh process,
   with torch's default threads (all cores) and with 1 thread, on a quiet machine and beside a
   second process running a torch matmul loop with torch's default threads; prints images/s and
   the ratio of each busy figure to its quiet one.

It ends with the machine's dense float32 matmul rate, measured in the same run.

    python benchmarks/scaling.py [--runners sequential threads dask sequential-all-cores] [--skip-neighbour]
                                 [--config toy-quick] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry calls

HERE = Path(__file__).resolve().parent
RUNNERS = {  # name -> execution overrides
    "sequential": ["execution.task_runner=sequential", "execution.workers=2", "execution.threads_per_task=1"],
    "sequential-all-cores": ["execution.task_runner=sequential", "execution.workers=1"],  # threads = all cores
    "threads": ["execution.task_runner=threads", "execution.workers=2", "execution.threads_per_task=1"],
    "dask": ["execution.task_runner=dask", "execution.workers=2", "execution.threads_per_task=1"],
}


# ------------------------------------------------------------------------------ child processes

def run_comparison(runner: str, workspace: str, config: str, extra: list[str]) -> None:
    """Child: one comparison; prints a JSON line with its wall time and table."""
    from ausynth.flows.compare import compare_strategies

    start = time.perf_counter()
    result = compare_strategies(config, overrides=[*RUNNERS[runner], f"workspace={workspace}", *extra])
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"seconds": seconds, "table": result.table.to_json(double_precision=15)}),
          flush=True)


def run_training(threads: str, workspace: str) -> None:
    """Child: train one classifier; prints a JSON line with its images/s."""
    import torch

    from ausynth.configs.loader import load_config
    from ausynth.tasks import datasets
    from ausynth.tasks.device import use_threads
    from ausynth.tasks.train_classifier import train_classifier

    if threads != "default":
        use_threads(int(threads))
    cfg = load_config("toy-quick", ["classifier.max_epochs=3", "classifier.patience=3", f"workspace={workspace}"])
    train, val = datasets.train_val(datasets.load_set(datasets.prepare_dataset(cfg), "labelled"))
    trained = train_classifier(train, val, cfg.classifier, 0, torch.device("cpu"))
    print("RESULT " + json.dumps({"images_per_s": trained.images_per_second, "threads": torch.get_num_threads()}),
          flush=True)


def neighbour() -> None:
    """Child: a busy neighbour, a torch matmul loop with torch's default threads, until killed."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    while True:
        torch.mm(a, b)


def child(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"{args} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")


# ------------------------------------------------------------------------------ the benchmark

def runners(names: list[str], config: str, extra: list[str], root: Path) -> None:
    import pandas as pd

    print(f"== 1. one comparison per runner: {config} {' '.join(extra)}")
    results = {}
    for name in names:
        results[name] = child(["--child-comparison", name, str(root / name), config, *extra], timeout=4 * 3600)
        print(f"   {name:22s} {results[name]['seconds']:7.1f} s", flush=True)
    base = results.get("sequential") or next(iter(results.values()))
    tables = {n: pd.read_json(io.StringIO(r["table"])) for n, r in results.items()}
    reference = tables.get("sequential", next(iter(tables.values())))
    print(f"   {'runner':22s} {'wall':>8s} {'speed-up vs sequential':>24s}  table identical to sequential's")
    for name, result in results.items():
        same = tables[name].equals(reference)
        print(f"   {name:22s} {result['seconds']:7.1f}s {base['seconds'] / result['seconds']:23.2f}x  {same}")


def busy_neighbour(root: Path) -> None:
    print("== 2. classifier training images/s (toy-quick, 1000 labelled, 3 epochs), quiet and beside a busy "
          "neighbour (torch matmul loop, default threads)")
    figures: dict[tuple[str, bool], dict] = {}
    child(["--child-training", "1", str(root / "train")])  # builds the dataset once, outside the timings
    for threads in ("default", "1"):
        env = {} if threads == "default" else {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        figures[threads, False] = child(["--child-training", threads, str(root / "train")], env)
        other = subprocess.Popen([sys.executable, __file__, "--child-neighbour"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            time.sleep(3)  # the neighbour is busy before training starts
            figures[threads, True] = child(["--child-training", threads, str(root / "train")], env)
        finally:
            other.kill()
            other.wait()
    print(f"   {'threads':16s} {'quiet img/s':>12s} {'busy img/s':>12s} {'busy / quiet':>13s}")
    for threads in ("default", "1"):
        quiet, busy = figures[threads, False], figures[threads, True]
        label = f"{threads} ({quiet['threads']})"
        print(f"   {label:16s} {quiet['images_per_s']:12.0f} {busy['images_per_s']:12.0f} "
              f"{busy['images_per_s'] / quiet['images_per_s']:12.2f}x")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("--child-"):
        kind, rest = sys.argv[1], sys.argv[2:]
        if kind == "--child-comparison":
            return run_comparison(rest[0], rest[1], rest[2], rest[3:])
        if kind == "--child-training":
            return run_training(rest[0], rest[1])
        return neighbour()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", nargs="+", choices=list(RUNNERS), default=list(RUNNERS))
    parser.add_argument("--skip-runners", action="store_true")
    parser.add_argument("--skip-neighbour", action="store_true")
    parser.add_argument("--config", default="toy-quick", help="the comparison to time (default: make run's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="ausynth-scaling-") as tmp:
        root = Path(tmp)
        if not args.skip_runners:
            runners(args.runners, args.config, args.overrides, root)
        if not args.skip_neighbour:
            busy_neighbour(root)
    sys.path.insert(0, str(HERE))
    from compute import matmul_gflops

    load = os.getloadavg()
    print(f"matmul (fp32, 2048x2048, default threads): {matmul_gflops():.1f} GFLOP/s; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


if __name__ == "__main__":
    main()
