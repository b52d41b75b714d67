"""Warehouse writes are atomic (models_ml.warehouse): an exception injected at ANY
statement of write_table, write_tables or a chunked staged_table write leaves the
previous table intact and no __stage_ table behind; re-writing is idempotent.

Faults are injected by a thin proxy around a real DuckDB connection that raises at
the n-th call; everything else runs on DuckDB itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import polars as pl
import pytest

from models_ml import config
from models_ml import warehouse as wh

TABLE = config.RAW_ITEMS
OTHER = config.RAW_INTERACTIONS

OLD = pl.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"], "text": ["old a", "old b"]})
NEW = pl.DataFrame({"item_id": ["x", "y", "z"], "title": ["X", "Y", "Z"], "text": ["new x", "new y", "new z"]})
OLD_OTHER = pl.DataFrame({"user_id": ["u1"], "item_id": ["a"], "engagement": [4.0]})
NEW_OTHER = pl.DataFrame({"user_id": ["u2", "u3"], "item_id": ["x", "y"], "engagement": [1.0, 5.0]})
CHUNKS = [NEW.slice(0, 1), NEW.slice(1, 1), NEW.slice(2, 1)]


class InjectedFault(Exception):
    pass


class FaultyConnection:
    """Delegates to a real connection; the ``fail_at``-th execute/register call raises
    ``exc`` instead of running. With ``fail_at=None`` it only counts calls."""

    def __init__(self, con, fail_at: int | None = None, exc: type[BaseException] = InjectedFault):
        self._con, self._fail_at, self._exc = con, fail_at, exc
        self.calls: list[str] = []

    def _call(self, kind: str, *args):
        self.calls.append(f"{kind}: {args[0]}" if args else kind)
        if self._fail_at is not None and len(self.calls) - 1 == self._fail_at:
            raise self._exc(f"injected at call {self._fail_at}: {self.calls[-1]}")
        return getattr(self._con, kind)(*args)

    def execute(self, *args):
        return self._call("execute", *args)

    def register(self, *args):
        return self._call("register", *args)

    def unregister(self, *args):
        return self._call("unregister", *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


def _seed(path):
    with wh.connect(path) as con:
        wh.write_tables(con, {TABLE: OLD, OTHER: OLD_OTHER})


def _state(path) -> tuple[dict[str, list[tuple]], list[str]]:
    """Contents of both tables and any staging tables, read on a fresh connection."""
    with wh.connect(path, read_only=True) as con:
        contents = {t: con.execute(f"select * from {t} order by all").fetchall() for t in (TABLE, OTHER)}
        stages = [r[0] for r in con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_name like '\\_\\_stage\\_%' escape '\\'").fetchall()]  # fmt: skip
    return contents, stages


def _rows(df: pl.DataFrame) -> list[tuple]:
    return sorted(df.rows())


OLD_STATE = ({TABLE: _rows(OLD), OTHER: _rows(OLD_OTHER)}, [])


# ---- the three write paths, each as a function of a connection ----------------------


def write_one(con):
    wh.write_table(con, TABLE, NEW)


def write_two(con):
    wh.write_tables(con, {TABLE: NEW, OTHER: NEW_OTHER})


def write_chunked(con):
    with wh.staged_table(con, TABLE) as stage:
        for chunk in CHUNKS:
            wh.append_to_stage(con, stage, chunk)


WRITERS = {"write_table": write_one, "write_tables": write_two, "staged_table": write_chunked}
EXPECTED_NEW = {
    "write_table": {TABLE: _rows(NEW), OTHER: _rows(OLD_OTHER)},
    "write_tables": {TABLE: _rows(NEW), OTHER: _rows(NEW_OTHER)},
    "staged_table": {TABLE: _rows(NEW), OTHER: _rows(OLD_OTHER)},
}


def _calls(tmp_path, writer) -> list[str]:
    path = tmp_path / "count.duckdb"
    _seed(path)
    with wh.connect(path) as con:
        proxy = FaultyConnection(con)
        writer(proxy)
    return proxy.calls


@pytest.mark.parametrize("name", list(WRITERS))
def test_clean_write_replaces_table(tmp_path, name):
    path = tmp_path / "wh.duckdb"
    _seed(path)
    with wh.connect(path) as con:
        WRITERS[name](con)
    assert _state(path) == (EXPECTED_NEW[name], [])


@pytest.mark.parametrize("exc", [InjectedFault, KeyboardInterrupt], ids=["exception", "keyboard_interrupt"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_fault_at_every_statement_leaves_previous_table(tmp_path, name, exc):
    calls = _calls(tmp_path, WRITERS[name])
    # the chunked path: create schema, drop stage, per chunk register/exists/insert/unregister, swap
    assert any("rename" in c for c in calls) and any("commit" in c for c in calls)
    for i in range(len(calls)):
        path = tmp_path / f"{name}_{i}.duckdb"
        _seed(path)
        with wh.connect(path) as con:
            with pytest.raises(exc, match=f"injected at call {i}:"):
                WRITERS[name](FaultyConnection(con, fail_at=i, exc=exc))
            # the same connection keeps working and sees the old tables
            assert _rows(con.execute(f"select * from {TABLE}").pl()) == _rows(OLD)
        assert _state(path) == OLD_STATE, f"fault at call {i} ({calls[i]}) changed the warehouse"


def test_exception_inside_chunked_write_keeps_old_table_and_drops_stage(tmp_path):
    path = tmp_path / "wh.duckdb"
    _seed(path)
    with wh.connect(path) as con:
        with pytest.raises(RuntimeError, match="model crashed after chunk 2"):
            with wh.staged_table(con, TABLE) as stage:
                wh.append_to_stage(con, stage, CHUNKS[0])
                wh.append_to_stage(con, stage, CHUNKS[1])
                # mid-write: readers on another connection still see the whole old table
                reader = con.cursor()
                assert _rows(reader.execute(f"select * from {TABLE}").pl()) == _rows(OLD)
                reader.close()
                raise RuntimeError("model crashed after chunk 2")
    assert _state(path) == OLD_STATE


def test_bad_chunk_schema_keeps_old_table(tmp_path):
    """A chunk that cannot be appended (wrong columns) is an error, not a half table."""
    path = tmp_path / "wh.duckdb"
    _seed(path)
    with wh.connect(path) as con:
        with pytest.raises(Exception, match="(?i)column|insert|mismatch|binder"):
            with wh.staged_table(con, TABLE) as stage:
                wh.append_to_stage(con, stage, CHUNKS[0])
                wh.append_to_stage(con, stage, pl.DataFrame({"only_one_column": [1]}))
    assert _state(path) == OLD_STATE


def test_nothing_staged_is_an_error(tmp_path):
    path = tmp_path / "wh.duckdb"
    _seed(path)
    with wh.connect(path) as con:
        with pytest.raises(RuntimeError, match=f"nothing was staged for {TABLE}"):
            with wh.staged_table(con, TABLE):
                pass
    assert _state(path) == OLD_STATE


def test_rewriting_is_idempotent(tmp_path):
    path = tmp_path / "wh.duckdb"
    _seed(path)
    for _ in range(3):
        with wh.connect(path) as con:
            wh.write_tables(con, {TABLE: NEW, OTHER: NEW_OTHER})
        assert _state(path) == (EXPECTED_NEW["write_tables"], [])
    with wh.connect(path, read_only=True) as con:
        assert wh.row_counts(con) == {OTHER: 2, TABLE: 3}


def test_views_on_a_rewritten_table_see_the_new_rows(tmp_path):
    """dbt staging views select from raw tables: the swap must not break or pin them."""
    path = tmp_path / "wh.duckdb"
    _seed(path)
    with wh.connect(path) as con:
        con.execute(f"create view main.stg_items as select item_id from {TABLE}")
        wh.write_table(con, TABLE, NEW)
        assert sorted(r[0] for r in con.execute("select * from main.stg_items").fetchall()) == ["x", "y", "z"]


# ---- a hard crash (SIGKILL) in the middle of a chunked write -------------------------

_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import polars as pl
    from models_ml import warehouse as wh
    with wh.connect(sys.argv[1]) as con:
        with wh.staged_table(con, sys.argv[2]) as stage:
            wh.append_to_stage(con, stage, pl.DataFrame(
                {"item_id": ["x"], "title": ["X"], "text": ["new x"]}))
            print("STAGED", flush=True)
            time.sleep(600)  # killed here, between chunks
    """
)


def _kill_mid_write(path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path), TABLE],
        cwd=config.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip() == "STAGED", proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_hard_kill_mid_write_leaves_previous_table_intact(tmp_path):
    path = tmp_path / "wh.duckdb"
    _seed(path)
    _kill_mid_write(path)
    contents, _ = _state(path)
    assert contents == OLD_STATE[0]
    # the next write of the same table clears any leftover and succeeds
    with wh.connect(path) as con:
        wh.write_table(con, TABLE, NEW)
    assert _state(path) == (EXPECTED_NEW["write_table"], [])


def test_hard_kill_mid_write_leaves_no_stage_table(tmp_path):
    path = tmp_path / "wh.duckdb"
    _seed(path)
    _kill_mid_write(path)
    _, stages = _state(path)
    assert stages == []
