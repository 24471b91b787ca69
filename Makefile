# The two commands of the README: `make demo` (materialize everything) and `make test`.
# Each creates .venv on first use; torch is pinned through constraints.txt (CPU wheel, no CUDA).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
SHARED_NAICS := $(abspath ../shared/naics/2022)
# Real Census files when they sit beside the checkout; else the code's default: the Census URL of the
# vintage, falling back loudly to the packaged codes and titles when it is unreachable.
ifneq ($(wildcard $(SHARED_NAICS)/*.xlsx),)
export NAICS_SOURCE ?= $(SHARED_NAICS)
endif

.PHONY: setup lint demo test data dev bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

$(DAGSTER_HOME):
	mkdir -p $@

demo: setup $(DAGSTER_HOME)
	$(BIN)/dagster asset materialize --select '*' -m naics_pipeline

data: setup $(DAGSTER_HOME)
	$(BIN)/dagster job execute -j data_job -m naics_pipeline

dev: setup $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/dg check defs

test: lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf data/naics* data/source data/downloads data/sampling_index data/training data/text_embeddings*
