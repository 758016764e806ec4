"""The ``ausynth`` command: run a flow from a config, validate a config, list built-in configs."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rich.console import Console
from rich.table import Table

from ausynth.configs.loader import ConfigError, builtin_config_dir, load_config
from ausynth.tasks.tracking import TrackingUnavailable

console = Console(width=max(Console().width, 110))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ausynth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (("run", "run the comparison flow"), ("train-generator", "train the config's generator alone"),
                ("prepare", "build the config's dataset alone"), ("validate", "check a config and print it"))
    for name, help_text in commands:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("config", help="a YAML path or a built-in config name (see `ausynth configs`)")
        cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override one setting, e.g. --set classifier.max_epochs=5 (repeatable)")
    sub.add_parser("configs", help="list the built-in configs")
    return parser


def _print_table(result) -> None:
    from ausynth.tasks.compare import format_table

    shown = format_table(result.table)
    table = Table(title="Strategy comparison (test set, mean ± std over seeds)")
    table.add_column("strategy")
    for column in shown.columns:
        table.add_column(str(column), justify="right")
    for strategy, row in shown.iterrows():
        table.add_row(str(strategy), *map(str, row.tolist()))
    console.print(table)
    console.print(f"outputs: {result.output_dir}")
    console.print(f"MLflow:  {result.tracking_uri} (parent run {result.parent_run_id})")
    console.print(f"         open the UI with: mlflow ui --backend-store-uri {result.tracking_uri} --workers 1")


def _run(args: argparse.Namespace) -> None:
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ausynth")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry calls
    if args.command == "train-generator":
        from ausynth.flows.train_generator import train_generator

        train_generator(args.config, overrides=args.overrides)
    elif args.command == "prepare":
        from ausynth.flows.prepare_dataset import prepare_dataset

        prepare_dataset(args.config, overrides=args.overrides)
    else:
        from ausynth.flows.compare import compare_strategies

        _print_table(compare_strategies(args.config, overrides=args.overrides))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("ausynth").setLevel(logging.INFO)
    try:
        if args.command == "configs":
            for path in sorted(builtin_config_dir().glob("*.yaml")):
                console.print(path.stem)
            return 0
        cfg = load_config(args.config, args.overrides)  # fail on a bad config before any work
        if args.command == "validate":
            console.print_json(cfg.model_dump_json())
            return 0
        _run(args)
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {err}", highlight=False)
        return 2
    except TrackingUnavailable as err:
        console.print(f"[red]MLflow unavailable:[/red] {err}", highlight=False)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
