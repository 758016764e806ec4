"""Real servers for tests/test_servers.py and tests/test_ui.py, started once per session.

A Prefect server, an MLflow server (SQLite store + artifacts in a temporary folder) and
``python -m ausynth.flows.serve`` run as subprocesses on free loopback ports, each in its own
process group, and are stopped when the session ends. Right after start-up two tiny comparisons
are triggered at once, one with ``prefect deployment run`` and one with ``run_deployment``, so
they train while the quicker tests run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

BIN = Path(sys.executable).parent
COMPARE = "ausynth-compare/compare"
# The flow's form fields plus the tiny sizes of conftest.TINY, as a user would fill in the UI form.
TINY_PARAMS = {
    "config": "toy-quick", "strategies": ["supervised", "upsample"], "seeds": [0], "labelled": 200,
    "augment_size": 100, "max_epochs": 2, "device": "cpu",
    "overrides": ["dataset.unlabelled=200", "dataset.test_per_au=10", "classifier.patience=2",
                  "classifier.width=4", "classifier.batch_size=50"],
}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ARTIFACTS = Path(os.environ.get("AUSYNTH_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "ausynth-test-artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.prefect_port, self.mlflow_port = free_port(), free_port()
        self.prefect_ui = f"http://127.0.0.1:{self.prefect_port}"
        self.prefect_api = f"{self.prefect_ui}/api"
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        self.workspace = root / "serve" / "workspace"  # the serve process' cwd is root/serve
        self.procs: dict[str, subprocess.Popen] = {}
        # a loaded 2-core machine makes the servers answer 503 now and then: retry those, any method
        self.http = requests.Session()
        self.http.mount("http://", HTTPAdapter(max_retries=Retry(total=6, backoff_factor=1, allowed_methods=None,
                                                                 status_forcelist=(502, 503, 504))))
        self.flow_run_ids: list[str] = []
        self._finished: list[dict] | None = None

    # processes ------------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        env.update(PREFECT_HOME=str(self.root / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PREFECT_API_URL=self.prefect_api, PREFECT_LOGGING_EXTRA_LOGGERS="ausynth")
        env.update(extra)
        return env

    def launch(self, name: str, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        log = open(self.logs / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(args, env=env, cwd=cwd or self.root, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"--- end of {name}.log ---\n" + "\n".join(text.splitlines()[-lines:])

    def wait_until(self, what: str, check, timeout: float, watch: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except requests.RequestException:
                pass
            for name in watch:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited while waiting for {what}\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                tails = "\n".join(self.log_tail(n) for n in watch)
                raise TimeoutError(f"{what}: not within {timeout:.0f} s\n{tails}")
            time.sleep(0.5)

    def start(self) -> None:
        server_env = self.env(PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(self.prefect_port))
        self.launch("prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                "--port", str(self.prefect_port)], server_env)
        self.launch("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
                               "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                               "--artifacts-destination", str(self.root / "mlartifacts")],
                    self.env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
        self.wait_until("Prefect server health", lambda: requests.get(f"{self.prefect_api}/health", timeout=3).ok,
                        180, ("prefect",))
        (self.root / "serve").mkdir()
        self.launch("serve", [sys.executable, "-m", "ausynth.flows.serve"],
                    self.env(MLFLOW_TRACKING_URI=self.mlflow_url, PREFECT_RUNNER_POLL_FREQUENCY="2"),
                    cwd=self.root / "serve")
        self.wait_until("the deployments", lambda: len(self.deployments()) >= 3, 180, ("serve",))
        self.wait_until("MLflow server health", lambda: requests.get(f"{self.mlflow_url}/health", timeout=3).ok,
                        180, ("mlflow",))

    def stop(self) -> None:
        for name in ("serve", "mlflow", "prefect"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass

    def keep_logs(self, label: str) -> Path:
        """Copy the server logs to the test-artifact folder (for a failed test)."""
        target = ARTIFACTS / label
        target.mkdir(parents=True, exist_ok=True)
        for log in self.logs.glob("*.log"):
            shutil.copy(log, target / log.name)
        return target

    # Prefect API ----------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None):
        response = self.http.request(method, f"{self.prefect_api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json() if response.content else None

    def deployments(self) -> dict[str, dict]:
        return {d["name"]: d for d in self.api("POST", "/deployments/filter", {})}

    def trigger_comparisons(self) -> None:
        """Two runs of the compare deployment at once: from the shell and from Python."""
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        cli = subprocess.Popen([str(BIN / "prefect"), "deployment", "run", COMPARE, "--params", json.dumps(TINY_PARAMS)],
                               env=self.env(), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        def trigger():  # in a thread: under Playwright's running event loop it would return a coroutine
            with temporary_settings({PREFECT_API_URL: self.prefect_api}):
                return run_deployment(COMPARE, parameters=TINY_PARAMS, timeout=0, as_subflow=False)

        with ThreadPoolExecutor(1) as pool:
            flow_run = pool.submit(trigger).result()
        out, _ = cli.communicate(timeout=120)
        found = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert cli.returncode == 0 and found, f"prefect deployment run failed:\n{out}"
        self.flow_run_ids = [found.group(1), str(flow_run.id)]

    def flow_runs_of(self, deployment_id: str, **parameters) -> list[dict]:
        """The deployment's flow runs whose parameters include these values, waiting for the first to appear."""
        found: list[dict] = []

        def submitted() -> bool:
            runs = self.api("POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})
            found[:] = [r for r in runs if all(r["parameters"].get(k) == v for k, v in parameters.items())]
            return bool(found)

        self.wait_until(f"a flow run of deployment {deployment_id} with {parameters}", submitted, 60)
        return found

    def wait_for_flow_run(self, run_id: str, timeout: float = 300) -> dict:
        """The flow run, once it is in a final state."""
        found: dict = {}

        def done() -> bool:
            found.update(self.api("GET", f"/flow_runs/{run_id}"))
            return found["state_type"] in TERMINAL

        self.wait_until(f"flow run {run_id}", done, timeout, ("serve",))
        return found

    def finished_comparisons(self, timeout: float = 300) -> list[dict]:
        """The two triggered flow runs, once both are in a final state."""
        if self._finished is None:
            self._finished = [self.wait_for_flow_run(run_id, timeout) for run_id in self.flow_run_ids]
        return self._finished

    # MLflow REST API ------------------------------------------------------------------------
    def mlflow(self, method: str, endpoint: str, **kwargs):
        response = self.http.request(method, f"{self.mlflow_url}/api/2.0/mlflow/{endpoint}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()


_STACK: Stack | None = None
_FAILED: BaseException | None = None


def shared_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The session's stack: started (and the comparisons triggered) by the first test needing it."""
    global _STACK, _FAILED
    if _FAILED is not None:
        pytest.fail(f"the servers did not start: {_FAILED}")
    if _STACK is None:
        stack = Stack(tmp_path_factory.mktemp("servers"))
        request.config.add_cleanup(stack.stop)
        try:
            stack.start()
            stack.trigger_comparisons()
        except BaseException as err:
            _FAILED = err
            stack.keep_logs("server-start")
            raise
        _STACK = stack
    return _STACK
