# The two quick-start commands: `make run` and `make test`. Both create the environment
# (.venv, ~5.5 GB with the CUDA build of torch) the first time.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= toy-quick
ARGS   ?=

.PHONY: run test install clean-workspace

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[faces,test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ausynth run $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-workspace:
	rm -rf workspace

# Server mode (README: "Servers, schedules and the UI"): a Prefect server, an MLflow server and a
# process serving the deployments, in the background, bound to $(HOST); `make stop` stops them
# by the process ids in workspace/pids/. Ports: make serve PREFECT_PORT=4300 MLFLOW_PORT=5300
PREFECT_PORT ?= 4200
MLFLOW_PORT  ?= 5000
HOST         ?= 127.0.0.1
SERVE_ARGS   ?=

.PHONY: serve stop serve-status test-servers

serve: $(STAMP)
	PREFECT_PORT=$(PREFECT_PORT) MLFLOW_PORT=$(MLFLOW_PORT) HOST=$(HOST) BIN=$(abspath $(BIN)) bash docker/servers.sh start $(SERVE_ARGS)

stop:
	bash docker/servers.sh stop

serve-status:
	bash docker/servers.sh status

# Only the tests that start real servers (tests/test_servers.py, tests/test_ui.py).
test-servers: $(STAMP)
	$(BIN)/python -m pytest -q -m servers
