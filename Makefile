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
