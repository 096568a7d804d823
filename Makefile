# The front door. Every target installs what it needs first (venv, pinned deps, Airflow DB).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9

export STOCKOPS_HOME ?= $(CURDIR)/.stockops
export GX_ANALYTICS_ENABLED := False

LANES := unit model data dags integration faults system
.PHONY: help install browser run demo test test-fast $(addprefix test-,$(LANES)) lint bench lock settings-docs clean
help:
	@echo "make run            start Airflow (http://127.0.0.1:8080) and the MLflow UI (http://127.0.0.1:5000)"
	@echo "make test           run the whole test suite (two workers, about 10 minutes)"
	@echo "make test-fast      the tests not marked slow"
	@echo "make test-<lane>    one folder of tests/: $(LANES) (MARK=<marker> narrows it: make test-system MARK=hosts)"
	@echo "make demo           run the pipeline in-process and print a summary"
	@echo "make lint           ruff, then mypy over include/, dags/ and plugins/"
	@echo "make bench          run the benchmarks in bench/ (results as JSON next to them; UNIVERSE=<universe.parquet>: the universe's too)"
	@echo "make lock           recompile requirements.txt from requirements.in"
	@echo "make settings-docs  regenerate .env.example's and the README's settings from their declarations"
	@echo "make install        the venv with the pinned packages (every target runs it first)"
	@echo "make browser        Debian's chromium, for the browser tests (make test runs it first)"
	@echo "make clean          remove the venv, the local home and the caches"

# The venv is rebuilt when the lock or the package metadata changes. Its packages are compiled to bytecode at
# install time: where PYTHONDONTWRITEBYTECODE is set (as on the project's machines) nothing is ever cached, and
# every process would compile what it imports from source again (TensorFlow: 17 s instead of 6 s per bento start).
$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "stockops needs Python 3.11 (set PYTHON=...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --python $(PY) --compile-bytecode -r requirements.txt
	$(UV) pip install --python $(PY) --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The dashboard's browser test drives Debian's chromium through Playwright (Playwright cannot
# download its own browser builds here); installed once, with apt, when it is missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

run: install
	$(PY) -m stockops run

demo: install
	$(PY) -m stockops demo

# Two pytest-xdist workers, whole files each (a module's servers and trained home stay in one worker), handed
# out in collection order: tests/conftest.py puts the longest files first (xdist's own order, most tests first,
# left the one-test Celery file running alone at the end). The session's two small models are trained once
# and shared by both workers (tests/conftest.py: model_home).
test: install browser
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=10 -m "not hosts"

test-fast: install
	$(PY) -m pytest -m "not slow"

# One lane of the suite, as tests/ is laid out: unit/ (by package), model/, data/, dags/, integration/ (DAG runs and
# the real BentoML server), faults/ (kill, corrupt, race), system/ (the whole local and Celery platforms).
# MARK narrows a lane to a marker: `make test-system MARK=hosts` (what CI adds to `make test`) runs only the
# multi-host test, the platform on four network-namespace hosts (a few minutes: outside `make test`'s budget).
$(addprefix test-,$(LANES)): test-%: install browser
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder tests/$* $(if $(MARK),-m "$(MARK)")

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/parse_time.py
	$(PY) bench/ingest_scale.py
	$(PY) bench/baselines_walkforward.py
	$(PY) bench/model_quality.py $(UNIVERSE)
	$(PY) bench/gate_thresholds.py
	$(PY) bench/serving_load.py
	$(PY) bench/monitor_drift.py
	$(PY) bench/restore_time.py
	$(PY) bench/lead_time.py
	$(PY) bench/lead_time.py --gate promote
	$(PY) bench/dashboard_draw.py $(UNIVERSE)
	@if [ -n "$(UNIVERSE)" ]; then for b in universe_ingest universe_validation universe_training universe_monitor \
		universe_cycle; do $(PY) bench/$$b.py $(UNIVERSE) || exit 1; done; \
	else echo "UNIVERSE=<path>/universe.parquet runs the universe benches too (bench/universe_*.py)"; fi
	$(PY) bench/test_time.py

lock: install
	$(UV) pip compile requirements.in -o requirements.txt --python-version 3.11

# The settings are declared once (include/stockops/core/environment.py, served_settings.py): .env.example's settings
# and the README's table are generated from them; tests/unit/core/test_settings.py fails when they differ.
settings-docs: install
	$(PY) -m stockops.core.settings_docs --write

clean:
	rm -rf $(VENV) .stockops .pytest_cache .mypy_cache
