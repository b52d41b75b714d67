"""Faults (issue 13): failed runs publish nothing, steps check their preconditions
before publishing, readers and writers wait for each other's locks, and a killed
Dagster process leaves no dbt child and no run stuck in STARTED.

Everything runs for real: the ingestion and clustering assets through Dagster on a
files source, DuckDB files held by real subprocesses, `dagster asset materialize`
killed with SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, materialize
from ge_fixtures import build_warehouse

from expectations import GateError, audit, validate_table
from models_ml import config
from models_ml import warehouse as wh
from orchestration.assets import clusters as cluster_assets
from orchestration.assets import ingestion
from orchestration.resources import WarehouseResource

REPO = config.REPO_ROOT
# the parameters of the ge_fixtures world, for its suites
PINNED = {"IE_K": "2", "IE_LEVEL": "2", "IE_POSITIVE_THRESHOLD": "4.0", "IE_LLM_TOP_M": "2", "IE_SLATE_K": "2"}
TOPICS = ("jazz, guitar, swing", "sourdough, bread, oven", "hiking, trail, tent", "chess, openings, endgame",
          "pottery, clay, kiln")


def catalog(tmp: Path, n_items: int, prefix: str = "i", users: int = 20) -> Path:
    """A files source: ``n_items`` items over five topics, every user on every topic."""
    tmp.mkdir(parents=True, exist_ok=True)
    ids = [f"{prefix}{i:03d}" for i in range(n_items)]
    pl.DataFrame({"item_id": ids, "title": [f"Title {i}" for i in ids],
                  "text": [f"{TOPICS[i % 5]}, {prefix} variant {i}" for i in range(n_items)]}).write_csv(tmp / "items.csv")
    rows = [(f"u{u}", ids[(u * 7 + j) % n_items], f"2023-02-{1 + j:02d}T10:00:00", 4.0 + (j % 2))
            for u in range(users) for j in range(10)]
    pl.DataFrame(rows, schema=["user_id", "item_id", "event_ts", "engagement"], orient="row").write_csv(
        tmp / "interactions.csv")
    return tmp


def run_assets(db: Path, assets, monkeypatch, source: Path, instance: DagsterInstance | None = None):
    monkeypatch.setenv("IE_SOURCE", "files")
    monkeypatch.setenv("IE_SOURCE_PATH", str(source))
    monkeypatch.setenv("DUCKDB_DATABASE", str(db))
    return materialize(assets, resources={"warehouse": WarehouseResource(database=str(db))},
                       instance=instance or DagsterInstance.ephemeral(), raise_on_error=False)


def snapshot(db: Path) -> dict[str, list]:
    with wh.connect(db, read_only=True) as con:
        return {t: con.execute(f"select * from {t} order by all").fetchall()
                for t in (config.RAW_ITEMS, config.RAW_INTERACTIONS, config.RAW_REJECTED_ROWS, config.CLUSTERS,
                          config.ITEM_CLUSTERS) if wh.table_exists(con, t)}


def failure_text(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a failed step"
    return "\n".join(e.event_specific_data.error.to_string() for e in failures)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A warehouse after a good run of ingestion and clustering on a 100-item catalog
    with no cluster counts set: they scale down to 2 coarse / 3 fine."""
    tmp = tmp_path_factory.mktemp("published")
    db = tmp / "wh.duckdb"
    mp = pytest.MonkeyPatch()
    for name in ("IE_FINE_CLUSTERS", "IE_COARSE_CLUSTERS"):
        mp.delenv(name, raising=False)
    result = run_assets(db, [ingestion.ingest_source, cluster_assets.interest_clusters], mp, catalog(tmp / "a", 100))
    mp.undo()
    assert result.success, failure_text(result)
    return db


def test_a_100_item_catalog_clusters_with_scaled_down_counts(published):
    assert config.cluster_sizes(100) == (2, 3)
    with wh.connect(published, read_only=True) as con:
        assert con.execute(f"select level, count(*) from {config.CLUSTERS} group by 1 order by 1").fetchall() == [
            (1, 2), (2, 3)]
        for table in (config.CLUSTERS, config.ITEM_CLUSTERS):
            assert validate_table(con, table).success


def test_cluster_sizes_name_the_minimum(monkeypatch):
    assert config.cluster_sizes(2000) == (8, 40) and config.cluster_sizes(3) == (2, 3)
    with pytest.raises(config.ClusterSizeError, match=r"would hold 100 items with 2 distinct texts: the minimum "
                                                      r"of 3 fine clusters needs at least 3 items with distinct texts"):
        config.cluster_sizes(100, 2)
    assert config.cluster_sizes(100, 4) == (2, 3)
    monkeypatch.setenv("IE_FINE_CLUSTERS", "200")
    with pytest.raises(config.ClusterSizeError, match="IE_FINE_CLUSTERS=200 needs at least 200 items"):
        config.cluster_sizes(100)
    monkeypatch.setenv("IE_FINE_CLUSTERS", "4")
    monkeypatch.setenv("IE_COARSE_CLUSTERS", "4")
    with pytest.raises(config.ClusterSizeError, match=r"IE_COARSE_CLUSTERS \(4\) must be smaller than the fine "
                                                      r"cluster count \(4, IE_FINE_CLUSTERS\)"):
        config.cluster_sizes(100)


def test_too_small_catalog_fails_before_the_raw_tables_change(published, tmp_path, monkeypatch):
    """The clustering precondition is checked at ingestion: the new catalog never
    replaces the old one, so ml.item_clusters keeps naming existing items."""
    db = tmp_path / "wh.duckdb"
    db.write_bytes(published.read_bytes())
    before = snapshot(db)
    monkeypatch.setenv("IE_FINE_CLUSTERS", "200")
    result = run_assets(db, [ingestion.ingest_source], monkeypatch, catalog(tmp_path / "b", 120, prefix="n"))
    assert not result.success
    assert "IE_FINE_CLUSTERS=200 needs at least 200 items with distinct texts" in failure_text(result)
    assert snapshot(db) == before
    with wh.connect(db, read_only=True) as con:
        assert validate_table(con, config.ITEM_CLUSTERS).success


def test_reject_rate_gate_stops_the_run_and_publishes_nothing(published, tmp_path, monkeypatch):
    db = tmp_path / "wh.duckdb"
    db.write_bytes(published.read_bytes())
    before = snapshot(db)
    source = catalog(tmp_path / "b", 100, prefix="n")
    inter = pl.read_csv(source / "interactions.csv", infer_schema=False)
    # half the events as compact dates: 20230201 would have been 1970-08-23 as seconds
    inter = inter.with_columns(pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("1675245600"))
                               .otherwise(pl.lit("20230201")).alias("event_ts"))
    inter.write_csv(source / "interactions.csv")
    result = run_assets(db, [ingestion.ingest_source], monkeypatch, source)
    assert not result.success
    text = failure_text(result)
    assert "too many rejected rows; nothing was published" in text
    assert "interactions.csv: 100 of 200 rows rejected (50.0%), above IE_MAX_REJECT_SHARE=0.05" in text
    assert "top reasons: event_ts is a compact date (YYYYMMDD), not a unix time 100" in text
    assert "row 2: event_ts is a compact date" in text  # sample rows
    assert snapshot(db) == before


def test_reject_rate_below_the_share_is_a_warning_line(published, tmp_path, monkeypatch):
    db = tmp_path / "wh.duckdb"
    db.write_bytes(published.read_bytes())
    source = catalog(tmp_path / "b", 100)
    with open(source / "interactions.csv", "a") as fh:
        fh.write("u1,i001,2023-02-01 10:00 CET,4\n")
    instance = DagsterInstance.ephemeral()
    result = run_assets(db, [ingestion.ingest_source], monkeypatch, source, instance)
    assert result.success
    messages = [r.user_message for r in instance.all_logs(result.run_id)]
    assert any("interactions.csv: 1 of 201 rows rejected (0.5%), within IE_MAX_REJECT_SHARE=0.05: "
               "event_ts with a time-zone name (use Z or +hh:mm) 1" in m for m in messages)
    meta = {e.asset_key: e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    shares = meta[ingestion.asset_key(config.RAW_REJECTED_ROWS)]["reject_share_by_file"].value
    assert shares == {"interactions.csv": round(1 / 201, 6), "items.csv": 0.0}


def test_audit_refuses_staged_raw_tables_the_gates_reject(published, tmp_path):
    """A writer that skips ingestion's rules still cannot publish: the suites run on the
    staged tables in the write transaction."""
    db = tmp_path / "wh.duckdb"
    db.write_bytes(published.read_bytes())
    before = snapshot(db)
    with wh.connect(db) as con:
        inter = wh.read_table(con, config.RAW_INTERACTIONS)
        bad = inter.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(-1.0).otherwise(pl.col("engagement"))
                                 .alias("engagement"))
        with pytest.raises(GateError, match=r"refusing to publish raw\.interactions.*\n.*"
                                            r"engagement_non_negative_finite .*1 of 200 unexpected value"):
            wh.write_tables(con, {config.RAW_INTERACTIONS: bad}, audit=audit)
    assert snapshot(db) == before


# ---- locks --------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read")
    print("HELD", flush=True)
    sys.stdin.readline()
    con.close()
    """
)


def hold(db: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "HELD"
    return proc


def release(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.write("\n")
        proc.stdin.flush()
    proc.wait(timeout=60)


def test_materialization_waits_for_a_reader_and_succeeds_once_it_closes(published, tmp_path, monkeypatch):
    db = tmp_path / "wh.duckdb"
    db.write_bytes(published.read_bytes())
    reader = hold(db, "read")
    seen: list[str] = []

    class ReleaseOnWait(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
            release(reader)  # the reader closes only once the writer is waiting for it

    handler = ReleaseOnWait()
    logging.getLogger(wh.__name__).addHandler(handler)
    monkeypatch.setenv("IE_LOCK_TIMEOUT_S", "600")
    instance = DagsterInstance.ephemeral()
    try:
        result = run_assets(db, [ingestion.ingest_source], monkeypatch, catalog(tmp_path / "b", 100, prefix="n"),
                            instance)
    finally:
        logging.getLogger(wh.__name__).removeHandler(handler)
        release(reader)
    assert result.success
    line = f"waiting up to 600 s for warehouse {db}: locked by process {reader.pid}"
    assert seen == [line]
    assert line in [r.user_message for r in instance.all_logs(result.run_id)]  # in the run's log too
    with wh.connect(db, read_only=True) as con:
        assert con.execute(f"select min(item_id) from {config.RAW_ITEMS}").fetchone()[0] == "n000"


def test_writer_gives_up_naming_the_holder(tmp_path):
    db = tmp_path / "wh.duckdb"
    with wh.connect(db):
        pass
    reader = hold(db, "read")
    try:
        with pytest.raises(wh.WarehouseBusyError, match=rf"warehouse {db} is busy: process {reader.pid} holds it"):
            with wh.connect(db, timeout_s=0.2):
                pass
    finally:
        release(reader)
    with wh.connect(db, timeout_s=0):  # free again
        pass


@pytest.fixture
def busy_db(tmp_path):
    db = build_warehouse(tmp_path / "busy.duckdb")
    writer = hold(db, "write")
    yield db, writer
    release(writer)


READERS = {
    "recommend": [str(Path(sys.executable).with_name("recommend")), "--user", "u1"],
    "validate": [sys.executable, "-m", "expectations", "validate", "--db", "{db}"],
    "summary": [sys.executable, "-m", "models_ml.cli.summary"],
}


@pytest.mark.parametrize("reader", list(READERS))
def test_readers_exit_75_with_one_line_while_a_writer_holds_the_file(busy_db, reader, tmp_path):
    db, writer = busy_db
    env = {**os.environ, "DUCKDB_DATABASE": str(db), "IE_LOCK_TIMEOUT_S": "0.3", "IE_MODELS_DIR": str(tmp_path)}
    cmd = [a.format(db=db) for a in READERS[reader]]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == wh.EXIT_BUSY == 75, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "waiting up to" not in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"warehouse {db} is busy: process {writer.pid} holds it" in lines[0]


# ---- kill -9: no orphaned dbt, no run stuck in STARTED ----------------------------------


def _children(pid: int) -> dict[int, str]:
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _wait(predicate, what: str, limit_s: float = 120.0):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
def test_kill_9_leaves_no_dbt_child_and_the_next_run_marks_the_killed_one_failed(tmp_path):
    db = build_warehouse(tmp_path / "wh.duckdb")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DUCKDB_DATABASE": str(db), "DAGSTER_HOME": str(home), **PINNED}
    dagster = str(Path(sys.executable).with_name("dagster"))
    proc = subprocess.Popen([dagster, "asset", "materialize", "-m", "orchestration", "--select", "group:warehouse"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the real dbt, exec'd by ie-dbt once it is bound to its parent
        dbt_pid = _wait(lambda: next((p for p, c in _children(proc.pid).items() if "/dbt build " in c), None),
                        "the dbt build child")
        assert not _gone(dbt_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _wait(lambda: _gone(dbt_pid), f"dbt (pid {dbt_pid}) to die with its parent")
    with wh.connect(db, timeout_s=60):  # the write lock is free
        pass
    instance = DagsterInstance.from_config(str(home))
    killed = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    assert len(killed) == 1
    # the next run's start (the real quality job, every GE gate, in this process) marks it failed
    from orchestration import defs

    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        nxt = defs.resolve_job_def("quality").execute_in_process(
            instance=instance, resources={"warehouse": WarehouseResource(database=str(db))})
    assert nxt.success
    run = instance.get_run_by_id(killed[0].run_id)
    assert run.status == DagsterRunStatus.FAILURE
    messages = [e.message for e in instance.all_logs(run.run_id) if e.dagster_event is not None]
    assert any(f"was left STARTED: its process {proc.pid} is gone" in (m or "") for m in messages)
    assert not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
