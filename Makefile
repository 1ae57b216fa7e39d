# poseloop: `make run` and `make test` work on a fresh clone with Python 3.11 and the package registries.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Local runs and tests: no telemetry, no usage stats, quiet Ray (see docs/DESIGN.md section 11).
export PATH := $(CURDIR)/$(BIN):$(PATH)
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: setup run demo test test-fast bench lint clean

setup: $(STAMP)
	@:

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: ~2 min)"
	@$(BIN)/python -m pip install -qq --disable-pip-version-check -e ".[dev]"
	@$(BIN)/dvc config --local core.analytics false >/dev/null 2>&1 || true
	@touch $(STAMP)

run: setup
	$(BIN)/dvc repro

# round 1 -> simulated annotation in a real local Label Studio -> round 2, then the status table
demo: setup
	$(BIN)/python -m pipeline.demo

# everything, what CI runs (.ci/run): lint first (seconds), then both test tiers (tests/unit, tests/integration)
test: setup lint
	$(BIN)/python -m pytest -q

# the unit tier, tests/unit: no server, no Ray cluster, no long training (those are in tests/integration, which
# tests/conftest.py marks slow and keeps honest); under 3 minutes on 2 cores
test-fast: setup
	$(BIN)/python -m pytest -q tests/unit

bench: setup
	$(BIN)/python -m bench

bench-%: setup
	$(BIN)/python -m bench $*

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# only what git ignores (stage outputs): tracked files (the committed round) and data/corrections (human work) stay
clean:
	git clean -fdX -- data/prepared data/train.json artifacts metrics plots
