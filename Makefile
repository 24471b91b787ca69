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

.PHONY: setup lint demo test data dev screenshots bench tensorboard clean clean-all

setup: $(VENV)/.installed

# uv installs the same pins in about half pip's time. Most of that is compiling bytecode, which stays:
# every process imports torch and dagster, and where PYTHONDONTWRITEBYTECODE=1 is set (as on this
# project's machines) nothing compiled at import is kept; without it a clean clone's tests took 359 s
# instead of 228 s. pip chooses the torch wheel (its find-links hold the pinned CPU build, where uv does
# not look) and uv installs that file with the rest. Without uv, or with INSTALLER=pip, pip alone.
INSTALLER ?= uv
TORCH_WHEEL_DIR := $(VENV)/torch-wheel

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	if [ "$(INSTALLER)" = uv ] && $(BIN)/pip install -q uv \
	    && $(BIN)/pip download -q --no-deps -c constraints.txt torch -d $(TORCH_WHEEL_DIR) \
	    && $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -c constraints.txt \
	         $(TORCH_WHEEL_DIR)/torch-*.whl -e '.[dev]'; then :; \
	else \
	    echo "installing with pip"; \
	    $(BIN)/pip install -q --upgrade pip && $(BIN)/pip install -q -c constraints.txt -e '.[dev]'; \
	fi
	rm -rf $(TORCH_WHEEL_DIR)
	touch $@

# The instance's settings (instance/dagster.yaml: no first-visit community dialog, no telemetry), copied
# when $(DAGSTER_HOME) has none; an instance's own dagster.yaml is never overwritten.
INSTANCE_YAML := $(DAGSTER_HOME)/dagster.yaml
$(INSTANCE_YAML): | instance/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	test -e $@ || cp instance/dagster.yaml $@

# dg: Dagster's current CLI (`dagster dev` still works, and warns that it is superseded). It finds the
# definitions through pyproject.toml's [tool.dg]; VIRTUAL_ENV tells it that the project's .venv is the one
# in use (else it warns on every command).
DG := VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg

# everything_job, the named job of every asset, submitted through a `dg dev` started for the run (stopped
# when it is done) so that the run belongs to the code location and shows under Overview, Jobs and Runs;
# `dg launch --job` runs it in-process, and the UI then lists it under Runs only. scripts/run_job.py.
demo: setup $(INSTANCE_YAML)
	$(BIN)/python scripts/run_job.py everything_job

data: setup $(INSTANCE_YAML)
	$(BIN)/python scripts/run_job.py data_job

dev: setup $(INSTANCE_YAML)
	$(DG) dev

# docs/img/*.png from the UI of `make dev` (port 3000) over a materialized instance; needs chromium.
screenshots: setup
	$(BIN)/python scripts/ui_screenshots.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/dg check defs

# One pytest worker per core (pytest-xdist), a test file per worker: the suite alone keeps about one
# core busy, and a file's module fixtures (one Dagster CLI run, one dagster dev) stay in one worker.
# `dg check defs` runs inside the suite (tests/test_dg_check.py), beside the other tests.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --dist loadfile

bench: setup
	$(BIN)/python benchmarks/bench_data.py

# Every stage's TensorBoard log (losses, metrics per epoch, the curriculum's mix, hyperparameters), under
# <storage root>/training/<stage>/tensorboard/. TENSORBOARD_PORT=6006 by default.
TENSORBOARD_PORT ?= 6006
tensorboard: setup
	$(BIN)/tensorboard --logdir "$$($(BIN)/python -c 'from naics_pipeline.settings import storage_root; print(storage_root() / "training")')" --port $(TENSORBOARD_PORT)

# Keeps data/text_cache: MiniLM vectors by encoder version and text hash, which take 3 to 4 minutes to
# rebuild on two cores and never go stale (a changed text has another hash). `make clean-all` drops it too.
clean:
	rm -rf data/naics* data/source data/downloads data/sampling_index data/training data/text_embeddings*

clean-all: clean
	rm -rf data/text_cache
