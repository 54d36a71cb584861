# Set-up and entry points. Every target creates .venv on first use.
#   make run                     # the main job on the embedded default (offline)
#   make run ARGS="method=selfaug experiment=quick"
#   make test                    # the whole test suite, slow end-to-end tests included
#   make lint                    # ruff (style, imports, bugbear) and mypy (types), as CI runs them
#   make dashboard               # MLflow UI on http://127.0.0.1:5000 over outputs/mlflow.db
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
PORT ?= 5000

.PHONY: install run test test-fast lint bench dashboard

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# pip 25.0.1: newer pips refuse to download the bigbench sdist (it declares a direct URL dependency).
	$(PY) -m pip install --quiet pip==25.0.1
	# The pinned CPU build first: an unpinned torch pulls several GB of CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) run.py $(ARGS)

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench run.py
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/method_cost.py $(ARGS)

dashboard: install
	$(PY) -m ragforget.tracking.dashboard --output-dir outputs --port $(PORT)
