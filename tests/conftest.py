"""Session set-up: the Dagster definitions load the dbt manifest, so parse the dbt
project once before any test module imports them (the manifest always matches the
project under test). The suite runs on the DuckDB target whatever DBT_TARGET the shell
selects (the Spark tests choose their target themselves)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models_ml import config
from tests.pipeline_env import materialize, small_demo_env


def pytest_sessionstart(session):
    os.environ.pop("DBT_TARGET", None)
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run(
        [str(dbt), "parse", "--quiet", "--project-dir", str(config.DBT_PROJECT_DIR),
         "--profiles-dir", str(config.DBT_PROJECT_DIR)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> dict[str, str]:
    """The whole job (`*`) materialized once on the small demo configuration, real SmolLM2
    with a few LoRA steps; its environment (DUCKDB_DATABASE, DAGSTER_HOME holding the runs).
    test_pipeline checks its tables, test_browser shows them in `dagster dev`: one build
    for both (about a minute and a half of the suite's slowest setup)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    env = small_demo_env(tmp)
    proc = materialize(env, "*")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return env
