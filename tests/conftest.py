"""Session set-up: the Dagster definitions load the dbt manifest, so parse the dbt
project once before any test module imports them (the manifest always matches the
project under test). The suite runs on the DuckDB target whatever DBT_TARGET the shell
selects (the Spark tests choose their target themselves)."""

import os
import subprocess
import sys
from pathlib import Path

from models_ml import config


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
