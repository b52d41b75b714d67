"""`python -m expectations validate --db FILE`: readable report, exit status for CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ge_fixtures import build_warehouse

from expectations import TABLES
from expectations.__main__ import main
from models_ml import config
from models_ml import warehouse as wh

PINNED = {"IE_K": "2", "IE_LEVEL": "2", "IE_POSITIVE_THRESHOLD": "4.0", "IE_LLM_TOP_M": "2", "IE_SLATE_K": "2"}


@pytest.fixture(autouse=True)
def pinned_params(monkeypatch):
    for name, value in PINNED.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def good_db(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("cli") / "good.duckdb")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **PINNED}
    return subprocess.run(
        [sys.executable, "-m", "expectations", *args],
        cwd=config.REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_good_warehouse_exits_zero(good_db):
    proc = run_cli("validate", "--db", str(good_db))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for table in TABLES:
        assert any(line.startswith("PASS") and f" {table} " in line for line in lines), table
    assert lines[-1] == "PASSED"


def test_corrupted_warehouse_exits_one_and_names_the_failure(good_db, tmp_path):
    path = tmp_path / "bad.duckdb"
    path.write_bytes(good_db.read_bytes())
    with wh.connect(path) as con:
        con.execute(f"update {config.RECOMMENDATIONS} set item_id = 'i1', cluster_id = 0 "
                    "where policy = 'baseline' and user_id = 'u1' and rank = 1")  # fmt: skip
    out = tmp_path / "report.json"
    proc = run_cli("validate", "--db", str(path), "--json", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout
    assert "FAIL  ml.recommendations" in text
    assert "x no_consumed_item_recommended  [expect_table_row_count_to_equal]  1 offending row" in text
    # the sample row is printed under the failure
    assert any("baseline" in line and "u1" in line and "i1" in line for line in text.splitlines())
    assert text.splitlines()[-1] == "FAILED: 1 expectation(s) failed"
    data = json.loads(out.read_text())
    assert data["success"] is False
    recs = next(s for s in data["suites"] if s["table"] == config.RECOMMENDATIONS)
    bad = [r for r in recs["results"] if r["status"] != "passed"]
    assert [(r["check"], r["unexpected_count"]) for r in bad] == [("no_consumed_item_recommended", 1)]


def test_tables_subset(good_db, capsys):
    assert main(["validate", "--db", str(good_db), "--tables", "clusters", "ml.item_clusters"]) == 0
    out = capsys.readouterr().out
    assert "2 tables" in out
    assert " ml.clusters " in out and " ml.item_clusters " in out and "raw.items" not in out


def test_missing_table_fails(tmp_path, capsys):
    path = tmp_path / "partial.duckdb"
    with wh.connect(path) as con:
        con.execute("create schema raw")
        con.execute("create table raw.items as select 'i1' as item_id, 'T' as title, 'text' as text")
    assert main(["validate", "--db", str(path), "--tables", "raw.items", "recommendations"]) == 1
    out = capsys.readouterr().out
    assert "PASS  raw.items" in out
    assert "table ml.recommendations does not exist" in out


def test_usage_errors_exit_two(tmp_path, good_db, capsys):
    assert main(["validate", "--db", str(tmp_path / "nope.duckdb")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["validate", "--db", str(good_db), "--tables", "no_such_table"]) == 2
    assert "no expectation suite for table 'no_such_table'" in capsys.readouterr().err
