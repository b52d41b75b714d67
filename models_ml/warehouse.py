"""The one module through which Python reads and writes the warehouse.

Every write is atomic: the new contents are built in a staging table and swapped
in inside one transaction, so a crash mid-write leaves the previous table intact
and readers never see a half-written table. Write, audit, publish: a connection
opened with an ``audit`` runs it on the swapped-in tables inside that transaction,
before the commit, and an audit that raises rolls everything back (the published
tables stay those of the last successful write). Swapping the storage engine means
changing this module only.

Locks: DuckDB lets one process write a file, or several read it, never both. Every
open here waits for another process holding the file (:func:`connect`, bounded by
``IE_LOCK_TIMEOUT_S``; one log line names the PID DuckDB reports) and then raises
:class:`WarehouseBusyError`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl

from models_ml import config

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOCK_ERROR = re.compile(r"Could not set lock on file")
_LOCK_PID = re.compile(r"\(PID (\d+)\)")
_log = logging.getLogger(__name__)

# audit(con, tables): validates the named tables as the transaction sees them; raises to refuse
Audit = Callable[[duckdb.DuckDBPyConnection, list[str]], None]
_AUDITS: dict[int, Audit] = {}  # id(connection) -> its audit, while it is open


# Exit status of every reader CLI when the warehouse stayed locked (EX_TEMPFAIL: retry later)
EXIT_BUSY = 75


class WarehouseBusyError(RuntimeError):
    """Another process held the warehouse file for longer than the lock timeout."""

    def __init__(self, path: Path, pid: int | None, waited_s: float, read_only: bool):
        self.path, self.pid, self.waited_s, self.read_only = path, pid, waited_s, read_only
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"warehouse {path} is busy: {holder} holds it and it stayed locked for {waited_s:.1f} s "
            f"(IE_LOCK_TIMEOUT_S); retry when that process is done"
        )


class PublishRefusedError(RuntimeError):
    """The audit refused the staged tables: nothing of the write was published."""


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    schema = schema or config.MARTS_SCHEMA
    for part in (schema, name):
        if not _IDENT.match(part):
            raise ValueError(f"invalid table name {table!r}")
    return schema, name


def lock_holder(exc: BaseException) -> int | None:
    """The PID in DuckDB's lock error, or None when ``exc`` is not a lock conflict (or
    names no PID)."""
    text = str(exc)
    if not _LOCK_ERROR.search(text):
        return None
    m = _LOCK_PID.search(text)
    return int(m.group(1)) if m else -1


def open_waiting(
    db: Path,
    read_only: bool = False,
    timeout_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open ``db``, waiting up to ``timeout_s`` (default IE_LOCK_TIMEOUT_S) while another
    process holds it; the one place that waits for the file lock (writers and readers)."""
    timeout_s = config.lock_timeout_s() if timeout_s is None else timeout_s
    start = time.monotonic()
    pause, announced = 0.05, False
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as exc:
            pid = lock_holder(exc)
            if pid is None:
                raise
            pid = None if pid < 0 else pid
            waited = time.monotonic() - start
            if waited >= timeout_s:
                raise WarehouseBusyError(db, pid, waited, read_only) from None
            if announced is False or announced != pid:  # one line per holder
                announced = pid
                holder = f"process {pid}" if pid is not None else "another process"
                msg = f"waiting up to {timeout_s:g} s for warehouse {db}: locked by {holder}"
                _log.warning(msg)
                if on_wait is not None:
                    on_wait(msg)
            time.sleep(min(pause, max(timeout_s - waited, 0.0)))
            pause = min(pause * 2, 1.0)


@contextlib.contextmanager
def connect(
    path: str | Path | None = None,
    read_only: bool = False,
    *,
    timeout_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    audit: Audit | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse file (default: ``config.database_path()``), waiting for other
    processes that hold it (:func:`open_waiting`). With ``audit``, every write on this
    connection is audited before it is published."""
    db = Path(path) if path is not None else config.database_path()
    if read_only and not db.exists():
        raise FileNotFoundError(f"warehouse file {db} does not exist; run `make demo` or materialize the assets first")
    db.parent.mkdir(parents=True, exist_ok=True)
    con = open_waiting(db, read_only, timeout_s, on_wait)
    if audit is not None:
        _AUDITS[id(con)] = audit
    try:
        yield con
    finally:
        _AUDITS.pop(id(con), None)
        con.close()


def wait_until_free(path: str | Path | None = None, on_wait: Callable[[str], None] | None = None) -> None:
    """Wait (as a writer) until no other process holds the file; for writers that open it
    themselves (dbt). Another process may still take it in between."""
    with connect(path, on_wait=on_wait):
        pass


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = _split(table)
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def read_table(con: duckdb.DuckDBPyConnection, table: str, columns: Iterable[str] | None = None) -> pl.DataFrame:
    if not table_exists(con, table):
        raise LookupError(f"table {table} does not exist in the warehouse; materialize its asset first")
    schema, name = _split(table)
    cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    return con.execute(f'select {cols} from "{schema}"."{name}"').pl()


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    return con.execute(sql, params or []).pl()


def write_table(con: duckdb.DuckDBPyConnection, table: str, df: pl.DataFrame) -> int:
    """Replace ``table`` with ``df`` atomically. Returns the row count."""
    return write_tables(con, {table: df})[table]


def write_tables(
    con: duckdb.DuckDBPyConnection, frames: dict[str, pl.DataFrame], audit: Audit | None = None
) -> dict[str, int]:
    """Replace several tables in ONE transaction, so tables that must agree with each
    other (raw.items and raw.interactions, ml.clusters and ml.item_clusters) are never
    seen half-updated, and are audited together. Returns row counts."""
    con.execute("begin transaction")
    try:
        for table, df in frames.items():
            stage = _prepare_stage(con, table)
            append_to_stage(con, stage, df, create=True)
        _swap_tables(con, list(frames))
        _audit(con, list(frames), audit)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return {t: df.height for t, df in frames.items()}


def _prepare_stage(con: duckdb.DuckDBPyConnection, table: str) -> str:
    schema, name = _split(table)
    con.execute(f'create schema if not exists "{schema}"')
    stage = f'"{schema}"."__stage_{name}"'
    con.execute(f"drop table if exists {stage}")  # a leftover from a killed pre-transaction writer
    return stage


def _audit(con: duckdb.DuckDBPyConnection, tables: list[str], audit: Audit | None) -> None:
    """The write's own audit, else the connection's; runs on the swapped tables before commit."""
    audit = audit or _AUDITS.get(id(con))
    if audit is not None:
        audit(con, tables)


def _swap_tables(con: duckdb.DuckDBPyConnection, tables: list[str]) -> None:
    """Drop each table and rename its stage in; the caller holds the transaction."""
    for table in tables:
        schema, name = _split(table)
        if not table_exists(con, f"{schema}.__stage_{name}"):
            raise RuntimeError(f"nothing was staged for {table}")
        con.execute(f'drop table if exists "{schema}"."{name}"')
        con.execute(f'alter table "{schema}"."__stage_{name}" rename to "{name}"')


@contextlib.contextmanager
def staged_table(con: duckdb.DuckDBPyConnection, table: str, audit: Audit | None = None) -> Iterator[str]:
    """Yield a staging table name for a chunked write (call :func:`append_to_stage`
    once per chunk). Staging and the swap run in one transaction: on clean exit the
    stage replaces ``table`` at commit; on an error, or if the process dies, nothing
    of the write is visible and ``table`` is untouched. Reads on ``con`` inside the
    block see the transaction's own state. The audit runs on the swapped table before
    the commit.
    """
    con.execute("begin transaction")
    try:
        stage = _prepare_stage(con, table)
        yield stage
        _swap_tables(con, [table])
        _audit(con, [table], audit)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def replace_partition(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame: pl.DataFrame,
    by: Sequence[str],
    chunk_rows: int = 50_000,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Replace the rows of ``table`` whose ``by`` values occur in ``frame`` with ``frame``,
    keeping every other row, atomically (one staged swap). Old rows keep the columns
    ``frame`` shares with them; an old table without the ``by`` columns is replaced
    whole. ``frame`` is staged ``chunk_rows`` at a time (``on_chunk(i)`` after each).
    Returns the rows written from ``frame``."""
    keep_old = table_exists(con, table)
    with staged_table(con, table) as stage:
        for i, start in enumerate(range(0, max(frame.height, 1), chunk_rows)):
            append_to_stage(con, stage, frame.slice(start, chunk_rows), create=i == 0)
            if on_chunk is not None:
                on_chunk(i)
        if keep_old:
            schema, name = _split(table)
            old_cols = set(query(con, f'select * from "{schema}"."{name}" limit 0').columns)
            if set(by) <= old_cols:
                cols = ", ".join(f'"{c}"' for c in frame.columns if c in old_cols)
                same = " and ".join(f'new."{c}" is not distinct from old."{c}"' for c in by)
                con.execute(
                    f'insert into {stage} ({cols}) select {cols} from "{schema}"."{name}" as old '
                    f"where not exists (select 1 from {stage} as new where {same})"
                )
    return frame.height


def append_to_stage(con: duckdb.DuckDBPyConnection, stage: str, df: pl.DataFrame, create: bool = False) -> None:
    """Append a polars frame to a staging table (created from the first chunk)."""
    arrow = df.to_arrow()
    con.register("__ie_chunk", arrow)
    try:
        if create or not _stage_exists(con, stage):
            con.execute(f"create table {stage} as select * from __ie_chunk")
        else:
            con.execute(f"insert into {stage} select * from __ie_chunk")
    finally:
        con.unregister("__ie_chunk")


def _stage_exists(con: duckdb.DuckDBPyConnection, stage: str) -> bool:
    schema, name = (p.strip('"') for p in stage.split("."))
    return table_exists(con, f"{schema}.{name}")


def export_parquet(con: duckdb.DuckDBPyConnection, folder: str | Path, tables: Iterable[str]) -> dict[str, Path]:
    """Write each of ``tables`` that exists to ``<folder>/<schema>/<table>/part-0.parquet``,
    the layout the dbt spark target reads its sources from (macros/portability.sql,
    ie_register_sources). Each file is replaced whole (written aside, then renamed).
    Returns the files written; missing tables are skipped."""
    written = {}
    for table in tables:
        if not table_exists(con, table):
            continue
        schema, name = _split(table)
        out = Path(folder) / schema / name
        out.mkdir(parents=True, exist_ok=True)
        # a leading dot: Spark skips the file while it is half-written
        tmp = out / ".part-0.parquet.tmp"
        path = str(tmp).replace("'", "''")
        con.execute(f"copy (select * from \"{schema}\".\"{name}\") to '{path}' (format parquet)")
        tmp.replace(out / "part-0.parquet")
        written[table] = out / "part-0.parquet"
    return written


def row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of every base table and view in the warehouse's own schemas."""
    rows = con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_schema in ('raw', 'ml', 'main') and table_name not like '__stage_%' "
        "order by table_schema, table_name"
    ).fetchall()
    return {f"{s}.{t}": con.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0] for s, t in rows}


def row_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Rows of one table (a partial write's asset reports the whole table)."""
    schema, name = _split(table)
    return con.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[0]
