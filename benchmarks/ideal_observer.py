"""What the toy data allow: the Bayes-ideal observer on each thesis setting's test set.

    python benchmarks/ideal_observer.py                          # all four toy-paper settings
    python benchmarks/ideal_observer.py --settings 3k-hard --set dataset.digits=mnist \
        --set dataset.mnist_path=../shared/data/mnist-t10k

For each setting and each of the two ideal observers of ``tasks/ideal_observer.py`` ('own cell':
each AU judged by its own cell, the bound for a classifier that learnt the training grids; 'whole
grid': also knowing the test set's one AU per image, the bound for any classifier), prints the mean
average precision and the highest mean F1 (thresholds per AU, chosen on the test set) with the mean
FDR there; then, for each of the thesis' strategies, the highest mean F1 reachable at the thesis'
mean FDR (an upper bound, ``f1_bound``'s Lagrangian dual) and whether the thesis' F1 / FDR point is
attainable under ``tasks/toy_data.py``'s rules. The 3K and 30K settings of one difficulty share
their test set, so their limits are the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from thesis import THESIS  # noqa: E402

from ausynth.configs.loader import load_config  # noqa: E402
from ausynth.tasks import ideal_observer, toy_data  # noqa: E402


def limits(setting: str, overrides: list[str]) -> dict[str, tuple[dict[str, float], dict[str, tuple[float, float]]]]:
    """Per observer ('own cell', 'whole grid'): its ranking summary on ``setting``'s test set, and per
    thesis strategy the (reached, bound) mean F1 at the thesis' mean FDR."""
    config = load_config(f"toy-paper-{setting}", overrides).dataset
    test = toy_data.build_toy(config.model_copy(update={"labelled": 1, "unlabelled": 0}))["test"]
    own_cell = ideal_observer.ideal_scores(test.images, config)
    observers = {"own cell": own_cell, "whole grid": ideal_observer.one_au_posterior(own_cell)}
    return {name: (ideal_observer.ranking_summary(test.labels, scores),
                   {strategy: ideal_observer.f1_bound(test.labels, scores, fdr / 100)
                    for strategy, (_, fdr) in THESIS[setting].items()})
            for name, scores in observers.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=sorted(THESIS), choices=sorted(THESIS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    for setting in args.settings:
        for observer, (summary, bounds) in limits(setting, args.overrides).items():
            print(f"{setting}, {observer}: mean AP {100 * summary['average_precision']:.2f}, highest mean F1 "
                  f"{100 * summary['max_f1']:.2f} at mean FDR {100 * summary['fdr_at_max_f1']:.2f}")
            for strategy, (reached, bound) in bounds.items():
                f1, fdr = THESIS[setting][strategy]
                print(f"  thesis {strategy} {f1} / {fdr}: mean F1 at mean FDR <= {fdr} at most {100 * bound:.2f} "
                      f"(reached {100 * reached:.2f}): {'attainable' if 100 * bound > f1 else 'NOT attainable'}")


if __name__ == "__main__":
    main()
