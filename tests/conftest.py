"""Session set-up: the Dagster definitions load the dbt manifest, so parse the dbt
project once before any test module imports them (the manifest always matches the
project under test). The suite runs on the DuckDB target whatever DBT_TARGET the shell
selects (the Spark tests choose their target themselves). `make test` spreads the
modules over every core (pytest-xdist, ``-n auto``); plain ``pytest`` runs in one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models_ml import config
from tests.pipeline_env import materialize, small_demo_env


def pytest_sessionstart(session):
    os.environ.pop("DBT_TARGET", None)
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller parsed before starting it
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run(
        [str(dbt), "parse", "--quiet", "--project-dir", str(config.DBT_PROJECT_DIR),
         "--profiles-dir", str(config.DBT_PROJECT_DIR)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")


# The modules whose tests use ``small_demo``: under xdist one worker runs them all, so the
# whole job is built once (checked at collection below).
SMALL_DEMO_MODULES = ("tests/test_pipeline.py", "tests/test_browser.py")


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = _module(item.nodeid)
        if "small_demo" in item.fixturenames and module not in SMALL_DEMO_MODULES:
            raise pytest.UsageError(f"{item.nodeid} uses small_demo: add {module} to conftest's SMALL_DEMO_MODULES")


@pytest.hookimpl(optionalhook=True)  # a plugin hook: plain pytest without xdist runs too
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs on every core (pytest-xdist). Each module's tests go to one worker,
    so module fixtures (a Spark session, a backfill) are built once, and the small demo's
    modules form one unit. (``--dist loadgroup`` would do this with markers, but its
    node-id rewrite has no effect under pytest 9.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = _module(nodeid)
            return "small_demo" if module in SMALL_DEMO_MODULES else module

        def _assign_work_unit(self, node) -> None:
            if "small_demo" in self.workqueue:  # the longest unit starts first
                self.workqueue.move_to_end("small_demo", last=False)
            super()._assign_work_unit(node)

    return ModuleScheduling(config, log)


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
