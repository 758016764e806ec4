"""The thesis' toy settings against its published numbers, plus training throughput.

    python benchmarks/toy_paper.py                      # 3k-medium and 3k-hard, 5 seeds
    python benchmarks/toy_paper.py --settings 3k-medium --set seeds=[0,1]

Prints, per setting and strategy, F1 / FDR (mean ± std over seeds, %) beside the thesis'
figure from MISSION.md, then the classifier's training throughput (images/s) and, measured in
the same run, the machine's dense matmul rate, with the ratio of achieved to available FLOP/s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ausynth")  # per-epoch and per-stage lines
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry calls

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compute import matmul_gflops, training_flops_per_image  # noqa: E402

from ausynth.configs.loader import load_config  # noqa: E402
from ausynth.flows.compare import compare_strategies  # noqa: E402
from ausynth.models.au_classifier import AUClassifier  # noqa: E402

# MISSION.md: F1 / FDR in %, mean of 5 runs.
THESIS = {
    "3k-medium": {"supervised": (64.70, 7.76), "pseudo_label": (64.22, 4.64), "generator": (65.07, 6.10),
                  "upsample": (60.68, 10.11)},
    "3k-hard": {"supervised": (46.42, 23.59), "pseudo_label": (45.45, 24.88), "generator": (44.52, 24.84),
                "upsample": (41.18, 28.15)},
    "30k-medium": {"supervised": (84.82, 2.15), "pseudo_label": (84.85, 1.77), "generator": (83.59, 3.09),
                   "upsample": (80.20, 2.26)},
    "30k-hard": {"supervised": (65.01, 11.46), "pseudo_label": (64.64, 10.36), "generator": (58.84, 12.75),
                 "upsample": (61.80, 12.41)},
}


def report(setting: str, table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for strategy, row in table.iterrows():
        f1, fdr = THESIS[setting].get(strategy, (float("nan"), float("nan")))
        rows.append({"setting": setting, "strategy": strategy,
                     "F1 %": f"{100 * row.f1_mean_mean:.2f} ± {100 * row.f1_mean_std:.2f}", "thesis F1": f1,
                     "FDR %": f"{100 * row.fdr_mean_mean:.2f} ± {100 * row.fdr_mean_std:.2f}", "thesis FDR": fdr,
                     "beats F1": 100 * row.f1_mean_mean > f1, "beats FDR": 100 * row.fdr_mean_mean < fdr,
                     "seeds": int(row.seeds)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["3k-medium", "3k-hard"], choices=sorted(THESIS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    logging.getLogger("ausynth").setLevel(logging.INFO)

    reports, throughput = [], []
    for setting in args.settings:
        result = compare_strategies(f"toy-paper-{setting}", overrides=args.overrides)
        reports.append(report(setting, result.table))
        per_seed = pd.read_csv(Path(result.output_dir) / "per_seed.csv")
        throughput.extend(per_seed["images_per_second"])
        print(f"{setting}: outputs in {result.output_dir}")

    cfg = load_config(f"toy-paper-{args.settings[0]}", args.overrides)
    model = AUClassifier(9, 1, cfg.classifier.backbone, cfg.classifier.width)
    flops = training_flops_per_image(model, (1, 96, 96))
    gflops = matmul_gflops()
    images_per_s = sum(throughput) / len(throughput)
    pd.set_option("display.width", 200)
    print(pd.concat(reports).to_string(index=False))
    print(f"classifier training: {images_per_s:.0f} images/s x {flops / 1e6:.1f} MFLOP/image = "
          f"{images_per_s * flops / 1e9:.2f} GFLOP/s")
    print(f"dense fp32 matmul (2048^2, same run): {gflops:.1f} GFLOP/s")
    print(f"achieved / available compute: {images_per_s * flops / 1e9 / gflops:.1%}")


if __name__ == "__main__":
    main()
