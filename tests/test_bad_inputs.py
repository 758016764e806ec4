"""The bad-inputs corpus (tests/bad_inputs/): every case is run as a user runs it and must fail (or recover)
the way a user expects.

Each case folder holds the files it needs and a ``case.yaml`` (see tests/bad_inputs/README.md). The test
copies the case into a temporary folder, runs ``ausynth <command>`` in-process from there against a copy of
a finished tiny comparison's workspace, and checks:

1. the exit code;
2. that the output names the file, key or row at fault (the case's ``expect`` strings);
3. that an error fits on a screen: at most ``SCREEN`` rows of ``WIDTH`` columns besides Prefect's own start-up
   lines (the log lines of the stages that ran count), and no traceback;
4. that nothing in the store or MLflow was lost or corrupted: every store entry and MLflow artifact of the
   baseline is still there with identical bytes (a damaged entry the run rebuilt is whole again, its damaged
   copy set aside), every earlier MLflow run has its status, no new run is left RUNNING, and a failing run
   added no store entries (beyond the kinds in ``allow_new``).

``pytest -rP tests/test_bad_inputs.py`` shows each case's command and output.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import sqlite3
import stat
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from ausynth.flows import prepare_dataset  # noqa: F401  imports prefect.main (its logging setup) outside a test
from ausynth.flows.cli import main
from ausynth.tasks.store import damage

from conftest import SHARED_DATA, shared_data

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
BASE = CORPUS / "_base"
CASES = sorted(p for p in CORPUS.iterdir() if (p / "case.yaml").is_file())
SCREEN, WIDTH = 15, 120  # rows and columns of a screen (the CLI prints at least 110 columns wide)
# Lines that are not the error: Prefect's start-up and flow-run bookkeeping, MLflow's database set-up.
NOT_THE_ERROR = ("Starting temporary server on", "See https://docs.prefect.io", "Beginning flow run",
                 "Beginning subflow run", " - View at http",
                 "Creating initial MLflow database tables", "Updating database tables",
                 "Stopping temporary server on")
CASE_KEYS = {"command", "exit_code", "expect", "setup", "env", "allow_new", "skip_if", "xfail", "needs"}


def load_case(folder: Path) -> dict:
    case = yaml.safe_load((folder / "case.yaml").read_text(encoding="utf-8"))
    unknown = set(case) - CASE_KEYS
    assert not unknown, f"{folder.name}/case.yaml: unknown keys {sorted(unknown)}"
    assert {"command", "exit_code", "expect"} <= set(case), f"{folder.name}/case.yaml needs command, exit_code, expect"
    return case


def _params():
    for folder in CASES:
        case = load_case(folder)
        marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if case.get("xfail") else []
        yield pytest.param(folder, id=folder.name, marks=marks)


# ----------------------------------------------------------------------------- the baseline workspace

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_entries(ws: Path) -> dict[str, Path]:
    """'kind/key' -> folder, for every finished entry of the workspace's store (not the hidden temporary,
    damaged or lock files)."""
    store = ws / "store"
    if not store.is_dir():
        return {}
    return {f"{kind.name}/{entry.name}": entry for kind in sorted(store.iterdir()) if kind.is_dir()
            for entry in sorted(kind.iterdir()) if entry.is_dir() and not entry.name.startswith(".")}


def file_hashes(ws: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file in the store's entries and the MLflow artifacts."""
    files = [f for entry in store_entries(ws).values() for f in entry.rglob("*")]
    files += list((ws / "mlartifacts").rglob("*"))
    return {str(f.relative_to(ws)): _sha256(f) for f in files if f.is_file()}


def mlflow_runs(ws: Path) -> dict[str, str]:
    """run id -> status of every run in the workspace's MLflow store (opened the way the project opens it)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=10_000)
    return {run.info.run_id: run.info.status for run in runs}


def move_mlflow_store(db: Path, old: Path, new: Path) -> None:
    """Point a copied MLflow SQLite store's artifact locations (and recorded paths) at the copy."""
    with sqlite3.connect(db) as con:
        tables = [row[0] for row in con.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            for column in [row[1] for row in con.execute(f'pragma table_info("{table}")')]:
                con.execute(f'update "{table}" set "{column}" = replace("{column}", ?, ?) '
                            f'where typeof("{column}") = \'text\' and instr("{column}", ?) > 0',
                            (str(old), str(new), str(old)))


class Baseline:
    """A finished tiny comparison (tests/bad_inputs/_base/tiny.yaml): its workspace and what it held."""

    def __init__(self, ws: Path) -> None:
        self.ws = ws
        self.entries = set(store_entries(ws))
        self.hashes = file_hashes(ws)
        self.runs = mlflow_runs(ws)

    def copy_to(self, ws: Path) -> None:
        shutil.copytree(self.ws, ws, symlinks=True)
        move_mlflow_store(ws / "mlflow.db", self.ws, ws)


@pytest.fixture(scope="session")
def baseline(tmp_path_factory, _prefect_test_server) -> Baseline:
    ws = tmp_path_factory.mktemp("bad-inputs-baseline") / "ws"
    code = main(["run", str(BASE / "tiny.yaml"), "--set", f"workspace={ws}"])
    assert code == 0, "the baseline comparison of tests/bad_inputs/_base/tiny.yaml failed"
    found = Baseline(ws)
    assert {"datasets", "classifiers", "pool_scores", "generators", "generated"} <= {e.split("/")[0]
                                                                                     for e in found.entries}
    assert found.runs and set(found.runs.values()) == {"FINISHED"}
    return found


# ----------------------------------------------------------------------------- set-up steps

def _one(ws: Path, kind: str, accept: Callable[[Path], bool] = lambda entry: True) -> Path:
    found = [entry for name, entry in store_entries(ws).items() if name.startswith(f"{kind}/") and accept(entry)]
    assert len(found) == 1, f"expected one {kind} store entry, found {found}"
    return found[0]


def _truncate(path: Path, keep: float = 0.5) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(int(size * keep))


def _baseline_checkpoint(ws: Path) -> Path:
    return _one(ws, "generators") / "generator.pt"


def _checkpoint(ws: Path, case: Path, **architecture) -> dict:
    """The baseline's generator checkpoint as ./ckpt.pt, or one of another architecture (a fresh network of that
    shape, so that weights and architecture agree, as in a checkpoint trained for other data)."""
    import torch

    from ausynth.tasks.checkpoint import save_checkpoint
    from ausynth.tasks.generator_kinds import Architecture, generator_kind

    source = _baseline_checkpoint(ws)
    if not architecture:
        shutil.copyfile(source, case / "ckpt.pt")
        return {}
    state = torch.load(source, map_location="cpu", weights_only=True)
    state.pop("format")
    arch = Architecture.from_dict({**state["architecture"], **architecture})
    kind = generator_kind(arch.kind)
    state.update(architecture=arch.as_dict(), generator=kind.generator(arch).state_dict(),
                 discriminator=kind.discriminator(arch).state_dict())
    save_checkpoint(case / "ckpt.pt", state)
    return {}


def _truncated_checkpoint(ws: Path, case: Path) -> dict:
    _checkpoint(ws, case)
    _truncate(case / "ckpt.pt")
    return {}


def _delete_classifier_weights(ws: Path, case: Path) -> dict:
    def baseline_seed0(entry: Path) -> bool:
        info = yaml.safe_load((entry / "info.json").read_text())
        return (info["strategy"], info["seed"]) == ("supervised", 0)  # not the oracle (another seed)

    entry = _one(ws, "classifiers", baseline_seed0)
    (entry / "model.pt").unlink()
    return {"damaged": entry}


def _truncate_dataset_images(ws: Path, case: Path) -> dict:
    entry = _one(ws, "datasets")
    _truncate(entry / "labelled" / "images.npy")
    return {"damaged": entry}


def _truncate_store_generator(ws: Path, case: Path) -> dict:
    entry = _one(ws, "generators")
    _truncate(entry / "generator.pt")
    return {"damaged": entry}


def _face_images(ws: Path, case: Path, manifest: str = "labels.csv", unreadable: int = 0) -> dict:
    """A small grey PNG for every image the manifest names; the last ``unreadable`` of them are not images."""
    import pandas as pd
    from PIL import Image

    paths = pd.read_csv(case / manifest, dtype=str, keep_default_na=False)["path"].tolist()
    for index, name in enumerate(paths):
        path = case / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if index >= len(paths) - unreadable:
            path.write_bytes(b"not an image, whatever its name says\n")
        else:
            pixels = np.random.default_rng(index).integers(0, 256, (24, 24), dtype=np.uint8)
            Image.fromarray(pixels, "L").save(path)
    return {}


def _write(ws: Path, case: Path, path: str, text: str, encoding: str) -> dict:
    """A text file in an encoding the project does not expect (committed files stay UTF-8)."""
    (case / path).write_bytes(text.encode(encoding))
    return {}


def _xlsx(ws: Path, case: Path, path: str = "labels.csv") -> dict:
    """An Excel workbook (a zip archive) saved under a .csv name."""
    with zipfile.ZipFile(case / path, "w") as book:
        book.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        book.writestr("xl/worksheets/sheet1.xml", "<worksheet><sheetData/></worksheet>")
    return {}


def _read_only_folder(ws: Path, case: Path, path: str) -> dict:
    folder = case / path
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    if os.access(folder, os.W_OK):
        folder.chmod(0o755)
        pytest.skip("this user can write to a read-only folder (root): the case cannot be made")
    return {"restore": lambda: folder.chmod(0o755)}


SETUP: dict[str, Callable[..., dict]] = {
    "checkpoint": _checkpoint,
    "truncated-checkpoint": _truncated_checkpoint,
    "delete-classifier-weights": _delete_classifier_weights,
    "truncate-dataset-images": _truncate_dataset_images,
    "truncate-store-generator": _truncate_store_generator,
    "face-images": _face_images,
    "write": _write,
    "xlsx": _xlsx,
    "read-only-folder": _read_only_folder,
}


def run_setup(steps: list, ws: Path, case: Path) -> dict:
    made: dict = {}
    for step in steps:
        name, args = (step, {}) if isinstance(step, str) else next(iter(step.items()))
        assert name in SETUP, f"unknown setup step {name!r}; known: {sorted(SETUP)}"
        made.update(SETUP[name](ws, case, **args))
    return made


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _skip(condition: str | None) -> None:
    if condition == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is visible: device cuda is not a bad input here")
    elif condition is not None:
        raise AssertionError(f"unknown skip_if {condition!r}")


# ----------------------------------------------------------------------------- the test

@contextmanager
def prefect_console_to_stderr() -> Iterator[None]:
    """Prefect's console handler writes to the stream it was made with (pytest's, at collection); point it at
    the test's captured stderr for one command, so the test sees the log lines a user sees."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    before = [(h.stream, h.console.file) for h in handlers]
    for handler in handlers:
        handler.setStream(sys.stderr)
        handler.console.file = sys.stderr
    try:
        yield
    finally:
        for handler, (stream, file) in zip(handlers, before):
            handler.setStream(stream)
            handler.console.file = file


def screen_rows(output: str, width: int = WIDTH) -> int:
    """The terminal rows the output takes at ``width`` columns, Prefect's start-up lines left out."""
    lines = [line for line in output.splitlines() if line.strip() and not any(s in line for s in NOT_THE_ERROR)]
    return sum(-(-len(line) // width) for line in lines)


def _names(expected: str, output: str) -> bool:
    """``expected`` in the output; a long path may have been wrapped by the console, so whitespace is ignored too."""
    return expected in output or "".join(expected.split()) in "".join(output.split())


@pytest.mark.parametrize("folder", list(_params()))
def test_bad_input(folder: Path, baseline: Baseline, tmp_path: Path, monkeypatch, capfd):
    case = load_case(folder)
    _skip(case.get("skip_if"))
    for name in case.get("needs", []):
        shared_data(name)
    ws = tmp_path / "ws"
    baseline.copy_to(ws)
    cases = tmp_path / "cases"
    shutil.copytree(BASE, cases / BASE.name)
    work = cases / folder.name
    shutil.copytree(folder, work)
    (work / "case.yaml").unlink()
    monkeypatch.chdir(work)
    made = run_setup(case.get("setup", []), ws, work)
    port = closed_port()
    fill = {"case": str(work), "ws": str(ws), "port": str(port), "damaged": str(made.get("damaged", "")),
            "shared": str(SHARED_DATA)}
    for key, value in case.get("env", {}).items():
        monkeypatch.setenv(key, str(value).format(**fill))
    command = [str(part).format(**fill) for part in case["command"]]
    argv = [*command[:2], "--set", f"workspace={ws}", *command[2:]]  # the case's own --set workspace= wins
    capfd.readouterr()
    try:
        with prefect_console_to_stderr():
            code = main(argv)
    finally:
        if "restore" in made:
            made["restore"]()
    out, err = capfd.readouterr()
    output = out + err
    shown = f"\n--- ausynth {' '.join(command)} (exit {code}) ---\n{output}"
    print(shown)  # shown for passing cases too with pytest -rP

    # 1. the exit code
    assert code == case["exit_code"], shown
    # 2. the file, key or row at fault is named
    missing = [s.format(**fill) for s in case["expect"] if not _names(str(s).format(**fill), output)]
    assert not missing, f"not in the output: {missing}{shown}"
    # 3. one screen, no traceback
    assert "Traceback" not in output, shown
    if code != 0:  # paths as short as a user's: the test's temporary folder is long
        rows = screen_rows(output.replace(str(tmp_path), "~"))
        assert rows <= SCREEN, f"{rows} rows of {WIDTH} columns{shown}"
    # 4. nothing lost or corrupted
    entries = store_entries(ws)
    damaged = made.get("damaged")
    rebuilt = {str(Path(damaged).relative_to(ws / "store"))} if damaged else set()
    lost = baseline.entries - set(entries)
    assert not lost, f"store entries lost: {sorted(lost)}{shown}"
    hashes = file_hashes(ws)
    changed = sorted(name for name, digest in baseline.hashes.items()
                     if not any(name.startswith(f"store/{entry}/") for entry in rebuilt) and hashes.get(name) != digest)
    assert not changed, f"files lost or changed: {changed}{shown}"
    for entry in rebuilt:
        assert damage(ws / "store" / entry) is None, f"{entry} was not rebuilt whole{shown}"
        kind, key = entry.split("/")
        assert list((ws / "store" / kind).glob(f".{key}.damaged-*")), f"the damaged {entry} was not set aside{shown}"
    if code != 0:
        allowed = set(case.get("allow_new", []))
        new = sorted(e for e in set(entries) - baseline.entries if e.split("/")[0] not in allowed)
        assert not new, f"a failing run added store entries {new}{shown}"
    runs = mlflow_runs(ws)
    changed_runs = {run: (status, runs.get(run)) for run, status in baseline.runs.items() if runs.get(run) != status}
    assert not changed_runs, f"earlier MLflow runs lost or changed status: {changed_runs}{shown}"
    left_running = [run for run, status in runs.items() if run not in baseline.runs and status == "RUNNING"]
    assert not left_running, f"MLflow runs left RUNNING after the command ended: {left_running}{shown}"
