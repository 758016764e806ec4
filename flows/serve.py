"""Deployments of the ausynth flows, served by one long-running process.

    python -m ausynth.flows.serve                 # register the deployments and run them
    python -m ausynth.flows.serve --no-schedule   # same, with the nightly schedule switched off
    python -m ausynth.flows.serve --list          # print the deployments and exit

Needs a Prefect server (``PREFECT_API_URL``; ``make serve`` starts one). The process registers
these deployments, then polls the server and runs whatever is triggered (from the UI, from
``prefect deployment run``, from ``run_deployment`` or by a schedule), each run in its own
subprocess, until it is stopped:

| deployment | flow | schedule |
|---|---|---|
| ``ausynth-compare/compare`` | the full comparison | none: triggered by hand |
| ``ausynth-compare/nightly-toy-quick`` | the comparison on ``toy-quick`` | cron ``0 3 * * *`` UTC |
| ``ausynth-prepare-dataset/prepare-dataset`` | dataset preparation alone | none |
| ``ausynth-train-generator/train-generator`` | generator training alone | none |

The nightly schedule is an example: ``--no-schedule`` or ``AUSYNTH_SCHEDULE=off`` registers it
inactive (it can then be switched on in the UI), ``AUSYNTH_NIGHTLY_CRON`` changes its cron string
and ``AUSYNTH_NIGHTLY_TZ`` its time zone. Flow runs inherit this process' environment, so
``MLFLOW_TRACKING_URI`` set here is where every run logs; relative workspaces (the configs'
default ``./workspace``) resolve against this process' working directory.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry calls
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ausynth")

from prefect import serve  # noqa: E402
from prefect.deployments.runner import EntrypointType, RunnerDeployment  # noqa: E402
from prefect.schedules import Cron  # noqa: E402

NIGHTLY_CRON = "0 3 * * *"
TAGS = ["ausynth"]
OFF = {"0", "off", "false", "no", "none", ""}


def schedule_enabled() -> bool:
    return os.environ.get("AUSYNTH_SCHEDULE", "on").strip().lower() not in OFF


def build_deployments(schedule: bool | None = None, cron: str | None = None) -> list[RunnerDeployment]:
    """The deployments ``serve`` registers. Parameters not given stay the flows' defaults."""
    from ausynth.flows.compare import compare_strategies
    from ausynth.flows.prepare_dataset import prepare_dataset_flow
    from ausynth.flows.train_generator import train_generator_flow

    schedule = schedule_enabled() if schedule is None else schedule
    cron = cron or os.environ.get("AUSYNTH_NIGHTLY_CRON") or NIGHTLY_CRON
    timezone = os.environ.get("AUSYNTH_NIGHTLY_TZ") or "UTC"
    # Runs load the flow by module path, so they do not depend on the working directory.
    common = {"tags": TAGS, "paused": False, "entrypoint_type": EntrypointType.MODULE_PATH}
    deployments = [
        compare_strategies.to_deployment(
            name="compare", **common,
            description="Compare augmentation strategies: every strategy x seed, logged to MLflow. "
                        "Fill in the form to override the config's values; `overrides` takes any "
                        "other dotted.key=value setting.",
        ),
        compare_strategies.to_deployment(
            name="nightly-toy-quick", **common,
            parameters={"config": "toy-quick"},
            schedules=[Cron(cron, timezone=timezone, active=schedule)],
            description=f"Example schedule: the toy-quick comparison every night ({cron}, {timezone}). "
                        "Switch it off here, or start the server with --no-schedule / AUSYNTH_SCHEDULE=off.",
        ),
        prepare_dataset_flow.to_deployment(
            name="prepare-dataset", **common,
            description="Build (or reuse) a config's labelled, unlabelled and test image sets in the store.",
        ),
        train_generator_flow.to_deployment(
            name="train-generator", **common,
            description="Train a generator alone (on a GPU where there is one) and store its checkpoint.",
        ),
    ]
    return deployments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ausynth.flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-schedule", action="store_true",
                        help="register the nightly schedule inactive (also: AUSYNTH_SCHEDULE=off)")
    parser.add_argument("--cron", default=None, help=f"the nightly cron string (default {NIGHTLY_CRON}, UTC)")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many flow runs at once (default: no limit)")
    parser.add_argument("--list", action="store_true", help="print the deployments and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    deployments = build_deployments(schedule=False if args.no_schedule else None, cron=args.cron)
    if args.list:
        for dep in deployments:
            crons = [getattr(s.schedule, "cron", "") + ("" if s.active else " (inactive)") for s in dep.schedules or []]
            print(f"{dep.flow_name}/{dep.name}\t{', '.join(crons) or '-'}")
        return 0
    serve(*deployments, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
