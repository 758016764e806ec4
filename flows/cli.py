"""The ``ausynth`` command: run a flow from a config, validate a config, list built-in configs, score images."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ausynth.configs.loader import builtin_config_dir, check_labelled, check_runtime, load_config
from ausynth.tasks.errors import UserError

console = Console(width=max(Console().width, 110))
err_console = Console(stderr=True, width=max(Console(stderr=True).width, 110))
DEBUG_HINT = "run with --debug (or AUSYNTH_DEBUG=1) for the traceback"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ausynth", description=__doc__)
    debug_help = "show full tracebacks and all of Prefect's logs for errors (also: AUSYNTH_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (("run", "run the comparison flow"), ("train-generator", "train the config's generator alone"),
                ("prepare", "build the config's dataset alone"),
                ("validate", "check a config, and that this machine can run it"))
    for name, help_text in commands:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("config", help="a YAML path or a built-in config name (see `ausynth configs`)")
        cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override one setting, e.g. --set classifier.max_epochs=5 (repeatable)")
        # accepted after the command too; SUPPRESS keeps a global --debug from being reset to False
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
        if name == "validate":
            cmd.add_argument("--show", action="store_true", help="print the resolved config as YAML")
    sub.add_parser("configs", help="list the built-in configs")
    _predict_parser(sub.add_parser("predict", help="score face images with a trained classifier (OpenFace-style CSV)"),
                    debug_help)
    return parser


def _predict_parser(cmd: argparse.ArgumentParser, debug_help: str) -> None:
    cmd.add_argument("images", help="a folder of images (sub-folders too) or a CSV manifest with a path column")
    cmd.add_argument("--model", required=True,
                     help="a registered model: NAME (its 'champion'), NAME@ALIAS or NAME/VERSION; or a classifier "
                          "folder of the store (workspace/store/classifiers/<key>/)")
    cmd.add_argument("--out", default="predictions.csv", help="the CSV to write (default: predictions.csv)")
    cmd.add_argument("--detection", choices=["face_alignment", "opencv", "none"],
                     help="another detection backend than the model's own (e.g. none: the images are face crops)")
    cmd.add_argument("--workspace", default="workspace",
                     help="its crops cache, and its mlflow.db unless --tracking-uri or MLFLOW_TRACKING_URI says else")
    cmd.add_argument("--tracking-uri", help="the MLflow store holding the registry (default: the workspace's)")
    cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)


def _rich_table(frame, title: str) -> Table:
    table = Table(title=title)
    table.add_column("strategy")
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for strategy, row in frame.iterrows():
        table.add_row(str(strategy), *map(str, row.tolist()))
    return table


def _print_table(result) -> None:
    from ausynth.tasks.compare import format_differences, format_table
    from ausynth.tasks.label_types import label_type

    kind = label_type(result.label_type)
    console.print(_rich_table(format_table(result.table, kind), "Strategy comparison (test set, mean ± sd over seeds)"))
    if result.differences["vs_baseline"].any():
        console.print(_rich_table(format_differences(result.differences, kind),
                                  "Difference to supervised, paired by seed (percentage points, [95% interval], "
                                  "* interval excludes 0)"))
    console.print(f"outputs: {result.output_dir}")
    console.print(f"MLflow:  {result.tracking_uri} (parent run {result.parent_run_id})")
    console.print(f"         open the UI with: mlflow ui --backend-store-uri {result.tracking_uri} --workers 1")


class HideUserErrors(logging.Filter):
    """Drop Prefect's console records about a UserError: its tracebacks and the lines repeating it.

    The CLI prints such an error once, as one paragraph. Prefect still fails the task and flow
    runs, and its API handler (the Prefect UI) still gets every record: this filter sits only on
    the console handlers. Records of any other exception (a bug) pass with their traceback.
    """

    # the one-line summaries Prefect logs without exc_info: a task's retry or failure, a final state
    SUMMARY = re.compile(r"^(Task run failed with exception: |Finished in state Failed\()")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect"):
            return True
        if record.exc_info and record.exc_info[1] is not None:
            return not isinstance(record.exc_info[1], UserError)
        message = record.getMessage()
        if not self.SUMMARY.match(message):
            return True
        names = {cls.__name__ for cls in _subclasses(UserError)}  # now: some are defined by modules loaded late
        return not any(re.search(rf"\b{name}[(:]", message) for name in names)


def _subclasses(cls: type) -> set[type]:
    return {cls}.union(*(_subclasses(sub) for sub in cls.__subclasses__()))


@contextmanager
def _quiet_user_errors(debug: bool) -> Iterator[None]:
    """Install ``HideUserErrors`` on the root logger's handlers (Prefect's console) for one command."""
    handlers = [] if debug else list(logging.getLogger().handlers)
    hide = HideUserErrors()
    for handler in handlers:
        handler.addFilter(hide)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(hide)


def _run(args: argparse.Namespace, debug: bool) -> None:
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ausynth")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry calls
    if args.command == "train-generator":
        from ausynth.flows.train_generator import train_generator_flow as flow_fn
    elif args.command == "prepare":
        from ausynth.flows.prepare_dataset import prepare_dataset_flow as flow_fn
    else:
        from ausynth.flows.compare import compare_strategies as flow_fn
    with _quiet_user_errors(debug):  # after the import: importing prefect sets up its handlers
        result = flow_fn(args.config, overrides=args.overrides)
    if args.command == "run":
        _print_table(result)


def _predict(args: argparse.Namespace) -> None:
    """Score the images and write the CSV; then one line on what was scored and where it went."""
    from ausynth.tasks import predict
    from ausynth.tasks.tracking import workspace_uri

    workspace = Path(args.workspace)
    classifier = predict.load(args.model, args.tracking_uri or workspace_uri(workspace))
    images = predict.list_images(Path(args.images))
    table = predict.predict(images, classifier, predict.detection_for(classifier, args.detection, workspace / "crops"))
    out = predict.write_csv(table, Path(args.out))
    lost = table.loc[table["success"] == 0, "status"].value_counts()
    without = f"; no crop for {', '.join(f'{n} ({status})' for status, n in lost.items())}" if len(lost) else ""
    console.print(f"{escape(str(out))}: {int(table['success'].sum())} of {len(table)} images scored with "
                  f"{escape(classifier.name)}{without}", highlight=False, soft_wrap=True)


def _validate(cfg, args: argparse.Namespace) -> None:
    """Print the resolved config on request, check it against this machine, then say so in one line."""
    if args.show:
        sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    try:
        check_runtime(cfg)
    except UserError as err:
        err.add_note("(the config's keys and values are valid; this machine cannot run it as it is)")
        raise
    try:
        check_labelled(cfg)
        what = f"{', '.join(cfg.strategies)}; {len(cfg.seeds)} seed(s)"
    except UserError:  # a pool alone: valid, but only `prepare` can use it
        what = "an unlabelled pool alone: valid for `ausynth prepare` only, not for run or train-generator"
    console.print(f"{escape(str(args.config))}: valid ({cfg.name}: {what}; device {cfg.device}; workspace "
                  f"{cfg.workspace.resolve()})" + ("" if args.show else "; --show prints the resolved config"),
                  highlight=False, soft_wrap=True)


def _print_error(err: UserError, debug: bool) -> None:
    if debug:
        traceback.print_exception(err)
    notes = "".join(f"\n{note}" for note in getattr(err, "__notes__", ()))
    err_console.print(f"[red]error:[/red] {escape(str(err) + notes)}", highlight=False, soft_wrap=True)
    if not debug:
        err_console.print(f"[dim]{DEBUG_HINT}[/dim]", highlight=False)


def _exit_on_termination() -> None:
    """Turn SIGTERM and SIGHUP (a `kill`, a closed terminal, a scheduler stopping the job) into SystemExit.

    Python's default for them ends the process on the spot: the MLflow run would stay RUNNING and
    Prefect's temporary API server, a child process, would be orphaned. As SystemExit they unwind like
    Ctrl-C: the run is marked KILLED and Prefect's exit handler stops its server. (``kill -9`` cannot
    be caught: the next run on this machine marks such a run KILLED.)
    """
    def stop(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a UserError (bad config, data, checkpoint, machine) exits with its code after one
    paragraph, any other exception is a bug and keeps its traceback."""
    args = _parser().parse_args(argv)
    debug = args.debug or os.environ.get("AUSYNTH_DEBUG", "") not in ("", "0")
    logging.getLogger("ausynth").setLevel(logging.INFO)
    if args.command == "configs":
        for path in sorted(builtin_config_dir().glob("*.yaml")):
            console.print(path.stem)
        return 0
    try:
        if args.command == "predict":
            _predict(args)
            return 0
        cfg = load_config(args.config, args.overrides)  # fail on a bad config before any work
        if args.command == "validate":
            _validate(cfg, args)
            return 0
        if args.command != "prepare":
            check_labelled(cfg)  # a pool alone can only be prepared
        check_runtime(cfg)  # device, memory, workspace: before Prefect starts
        _exit_on_termination()
        _run(args, debug)
    except UserError as err:
        _print_error(err, debug)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
