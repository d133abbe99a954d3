# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CRYSTAL_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CRYSTAL_DATA_DIR)/dagster_home

.PHONY: install demo test ui bench clean-data

install: $(VENV)/.installed

# pip takes the CPU build of torch==2.13.0 that lies on the development machines' disk;
# a GPU host installs its CUDA torch first (docs/running_on_gpu.md).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' && touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -n 2 -q

ui: install
	mkdir -p "$(DAGSTER_HOME)" && cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(BIN)/dagster dev -w workspace.yaml

bench: install
	$(BIN)/python bench/preprocess.py && $(BIN)/python bench/synthetic_archive.py && $(BIN)/python bench/train_throughput.py

clean-data:
	rm -rf "$(CRYSTAL_DATA_DIR)"
