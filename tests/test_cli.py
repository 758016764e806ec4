"""The ``ausynth`` command's error presentation: a user's error is one paragraph, a bug keeps its traceback."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ausynth.flows import prepare_dataset  # noqa: F401  imports prefect.main (its logging setup) outside a test
from ausynth.flows.cli import HideUserErrors, _parser, main
from ausynth.tasks.errors import DataError

SCREEN = 15


def faces_config_with_bad_manifest(tmp_path: Path) -> Path:
    """A config that loads fine but whose data fails inside the dataset task (a DataError)."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("picture,AU01\na.png,1\n")
    config = tmp_path / "faces.yaml"
    config.write_text(f"workspace: {tmp_path / 'ws'}\nseeds: [0]\n"
                      f"dataset:\n  kind: faces\n  source: {{manifest: {manifest}}}\n")
    return config


def record(message: str, exc: BaseException | None = None, name: str = "prefect.task_runs") -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, exc_info)


def test_filter_hides_user_errors_only():
    hide = HideUserErrors()
    data = DataError("m.csv: no image path column")
    assert not hide.filter(record("Task run failed with exception: ... - Retries are exhausted", data))
    assert not hide.filter(record("Encountered exception during execution: ...", data, "prefect.flow_runs"))
    assert not hide.filter(record(f'Finished in state Failed("Task run encountered an exception DataError: {data}")'))
    assert not hide.filter(record(f"Task run failed with exception: {data!r} - Retry 1/2 will start in 5 second(s)"))
    bug = ZeroDivisionError("division by zero")
    assert hide.filter(record("Task run failed with exception: ZeroDivisionError(...)", bug))
    assert hide.filter(record('Finished in state Failed("Task run encountered an exception ZeroDivisionError: ...")'))
    assert hide.filter(record("stage build-dataset done in 1.0 s", name="ausynth"))
    assert hide.filter(record("a DataError of our own", data, name="ausynth"))  # not Prefect's: untouched


@pytest.mark.parametrize("argv", [["--debug", "validate", "x"], ["validate", "x", "--debug"], ["run", "x", "--debug"]])
def test_debug_flag_before_or_after_the_command(argv):
    assert _parser().parse_args(argv).debug is True
    assert _parser().parse_args(argv[-2:] if argv[0] == "--debug" else argv[:2]).debug is False


def test_user_error_in_a_task_exits_with_its_code_and_the_flow_run_ends_failed(tmp_path, capsys):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    assert main(["prepare", str(faces_config_with_bad_manifest(tmp_path))]) == DataError.exit_code
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'm.csv'}" in err and "--debug" in err
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["ausynth-prepare-dataset"])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
    assert runs[0].state.is_failed()  # Prefect's own state handling is untouched


@pytest.mark.slow
@pytest.mark.parametrize("debug", [False, True])
def test_data_error_inside_a_task_fits_on_a_screen_unless_debugging(tmp_path, debug):
    """The real command in a fresh process: Prefect's console handler as a user has it."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "OMP_NUM_THREADS": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # a loaded CI machine starts it slowly
    env.pop("AUSYNTH_DEBUG", None)
    if debug:
        env["AUSYNTH_DEBUG"] = "1"
    code = "import sys; from ausynth.flows.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "prepare", str(faces_config_with_bad_manifest(tmp_path))],
                          capture_output=True, text=True, env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == DataError.exit_code, output
    assert f"error: {tmp_path / 'm.csv'}" in output, output
    if debug:
        assert "Traceback" in output and "Encountered exception during execution" in output
    else:
        assert "Traceback" not in output and len(output.splitlines()) <= SCREEN, output
