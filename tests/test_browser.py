"""What a Dagster user sees, in a real browser: `dagster dev` on a small built warehouse
(conftest's small_demo, the whole job that test_pipeline checks), driven by headless
Chromium (Debian's `chromium`) through Playwright. Asserts that asset pages show their
row count and typed, described columns (a Python-written table and a dbt mart), that the
fine-tuning asset shows its training-curve image, and that the refresh gate is among its
checks. Screenshots go to screenshots/ (git-ignored; IE_SCREENSHOTS_DIR overrides)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from models_ml import config

CHROMIUM = next((p for p in (os.environ.get("IE_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p), None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found (Debian: apt-get install chromium; "
                                                "or IE_CHROMIUM=/path/to/chromium)"),
]
SCREENSHOTS = Path(os.environ.get("IE_SCREENSHOTS_DIR", config.REPO_ROOT / "screenshots"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOCATION_QUERY = json.dumps({"query": "{ workspaceOrError { ... on Workspace { locationEntries { "
                                      "locationOrLoadError { __typename } } } } }"}).encode()


def location_status(url: str) -> str | None:
    """The code location's GraphQL type once loaded (RepositoryLocation or PythonError),
    None while the webserver or the location is still starting."""
    try:
        req = urllib.request.Request(url + "/graphql", data=LOCATION_QUERY, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            entries = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    loaded = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]]
    return loaded[0]["__typename"] if loaded else None


@pytest.fixture(scope="module")
def built(small_demo):
    return small_demo


@pytest.fixture(scope="module")
def ui(built, tmp_path_factory):
    """`dagster dev` on the built warehouse's Dagster home; its URL."""
    # a loaded CPU can take minutes to import the code location (dbt parse included)
    (Path(built["DAGSTER_HOME"]) / "dagster.yaml").write_text("code_servers:\n  local_startup_timeout: 900\n")
    port = free_port()
    log = (tmp_path_factory.mktemp("dagster_dev") / "dev.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=config.REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**built, "PATH": f"{Path(sys.executable).parent}:{built['PATH']}"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while (status := location_status(url)) != "RepositoryLocation":
            if status == "PythonError" or proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"dagster dev did not load the code location ({status}): "
                            f"{Path(log.name).read_text()[-3000:]}")
            time.sleep(3)
        yield url
    finally:
        # SIGINT is dagster dev's Ctrl-C (it stops its webserver and daemon); then the group
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def page(ui):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(300_000)  # a loaded 2-core CPU answers the UI's queries slowly
        pg.goto(ui + "/assets/raw/items", wait_until="domcontentloaded")
        pg.get_by_text("Row count").first.wait_for()
        skip = pg.get_by_role("button", name="Skip")  # the first-visit newsletter dialog
        try:
            skip.wait_for(timeout=30_000)
            skip.click()
        except Exception:  # not shown: nothing to dismiss
            pass
        yield pg
        browser.close()


def open_asset(page, ui, path: str, shot: str, view: str = "") -> str:
    page.goto(f"{ui}/assets/{path}" + (f"?view={view}" if view else ""), wait_until="domcontentloaded")
    try:
        page.get_by_text("Row count" if not view else "This is a blocking asset check.").first.wait_for()
        if not view:
            page.get_by_text("Column name").first.wait_for()
    finally:  # the page as it stood, also when it failed
        page.screenshot(path=str(SCREENSHOTS / shot), full_page=True)
    return page.inner_text("body")


def columns_table(text: str) -> str:
    return text[text.index("Columns"):text.index("Metadata")]


def test_python_table_shows_row_count_and_typed_columns(page, ui, built):
    text = open_asset(page, ui, "raw/items", "raw_items.png")
    assert text[text.index("Row count"):].split("\n")[1].strip() == "240"  # IE_DEMO_ITEMS
    cols = columns_table(text)
    for name, kind, description in (("item_id", "VARCHAR", "Item id, unique."),
                                    ("text", "VARCHAR", "what the clusters are built from")):
        assert name in cols and kind in cols and description in cols
    assert built["DUCKDB_DATABASE"] in text  # the warehouse the materialization wrote


def test_dbt_mart_shows_row_count_and_typed_columns(page, ui, built):
    text = open_asset(page, ui, "training_pairs", "training_pairs.png")
    with duckdb.connect(built["DUCKDB_DATABASE"], read_only=True) as con:
        n = con.execute(f"select count(*) from {config.TRAINING_PAIRS}").fetchone()[0]
    assert text[text.index("Row count"):].split("\n")[1].strip().replace(",", "") == str(n)
    cols = columns_table(text)
    assert "INTEGER[]" in cols and "List of K distinct cluster ids, oldest first." in cols
    assert "fold" in cols and "Train rows only" in cols


def test_finetune_asset_shows_its_training_curve(page, ui):
    open_asset(page, ui, "ml/finetune_history", "finetune_history.png")
    page.locator("tr", has_text="training_curve").first.get_by_text("[Show Markdown]").click()
    img = page.locator('img[src^="data:image/png;base64,"]').first
    img.wait_for(state="visible")
    assert img.evaluate("i => i.complete && i.naturalWidth") == 1000  # 10 in at 100 dpi (models_ml/plots.py)
    page.screenshot(path=str(SCREENSHOTS / "finetune_training_curve.png"))
    page.keyboard.press("Escape")


def test_refresh_gate_is_among_the_checks(page, ui):
    text = open_asset(page, ui, "ml/finetune_history", "finetune_history_checks.png", view="checks")
    assert "refresh_gate" in text and "This is a blocking asset check." in text
    assert "every rule passed" in text  # small_demo_env turns the rules off: 4 steps cannot pass them
