# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CRYSTAL_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CRYSTAL_DATA_DIR)/dagster_home

.PHONY: install system-deps demo test ui serve bench clean-data

install: $(VENV)/.installed

# pip takes the CPU build of torch==2.13.0 that lies on the development machines' disk;
# a GPU host installs its CUDA torch first (docs/running_on_gpu.md).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' && touch $@

# Debian packages for the service and its tests (PostgreSQL server, Chromium + driver), only when missing.
system-deps:
	bash scripts/install_system_deps.sh

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: install system-deps
	$(BIN)/python -m pytest -n 2 -q

ui: install
	mkdir -p "$(DAGSTER_HOME)" && cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(BIN)/dagster dev -w workspace.yaml

# Production-like, in the foreground: Postgres, code server, dagster-daemon, dagster-webserver
# (docs/deployment.md). Ctrl-C stops all of them. Port: CRYSTAL_SERVE_PORT (default 3000).
serve: install system-deps
	$(BIN)/python scripts/serve.py

bench: install
	$(BIN)/python bench/preprocess.py && $(BIN)/python bench/synthetic_archive.py && $(BIN)/python bench/train_throughput.py

clean-data:
	rm -rf "$(CRYSTAL_DATA_DIR)"
