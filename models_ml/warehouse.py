"""The one module through which Python reads and writes the warehouse.

Every write is atomic: the new contents are built in a staging table and swapped
in inside one transaction, so a crash mid-write leaves the previous table intact
and readers never see a half-written table. Swapping the storage engine means
changing this module only.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl

from models_ml import config

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    schema = schema or config.MARTS_SCHEMA
    for part in (schema, name):
        if not _IDENT.match(part):
            raise ValueError(f"invalid table name {table!r}")
    return schema, name


@contextlib.contextmanager
def connect(path: str | Path | None = None, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse file (default: ``config.database_path()``)."""
    db = Path(path) if path is not None else config.database_path()
    if read_only and not db.exists():
        raise FileNotFoundError(f"warehouse file {db} does not exist; run `make demo` or materialize the assets first")
    db.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db), read_only=read_only)
    try:
        yield con
    finally:
        con.close()


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


def write_tables(con: duckdb.DuckDBPyConnection, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Replace several tables in ONE transaction, so tables that must agree with each
    other (raw.items and raw.interactions, ml.clusters and ml.item_clusters) are never
    seen half-updated. Returns row counts."""
    con.execute("begin transaction")
    try:
        for table, df in frames.items():
            stage = _prepare_stage(con, table)
            append_to_stage(con, stage, df, create=True)
        _swap_tables(con, list(frames))
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


def _swap_tables(con: duckdb.DuckDBPyConnection, tables: list[str]) -> None:
    """Drop each table and rename its stage in; the caller holds the transaction."""
    for table in tables:
        schema, name = _split(table)
        if not table_exists(con, f"{schema}.__stage_{name}"):
            raise RuntimeError(f"nothing was staged for {table}")
        con.execute(f'drop table if exists "{schema}"."{name}"')
        con.execute(f'alter table "{schema}"."__stage_{name}" rename to "{name}"')


@contextlib.contextmanager
def staged_table(con: duckdb.DuckDBPyConnection, table: str) -> Iterator[str]:
    """Yield a staging table name for a chunked write (call :func:`append_to_stage`
    once per chunk). Staging and the swap run in one transaction: on clean exit the
    stage replaces ``table`` at commit; on an error, or if the process dies, nothing
    of the write is visible and ``table`` is untouched. Reads on ``con`` inside the
    block see the transaction's own state.
    """
    con.execute("begin transaction")
    try:
        stage = _prepare_stage(con, table)
        yield stage
        _swap_tables(con, [table])
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
