"""Run the suites against a DuckDB warehouse and return structured results.

Used by the Dagster asset checks (orchestration/assets/quality.py) and by
``python -m expectations validate``. Frames are read from DuckDB into pandas and
validated with an ephemeral GE context and its pandas datasource: GE 1.x cannot
validate DuckDB through its SQL datasource (every expectation fails).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

# No usage analytics: the warehouse runs offline and validation must not wait on the network.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import duckdb  # noqa: E402
import great_expectations as gx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from expectations.suites import SCHEMA, TABLE, Check, Params, Suite, build_suite, resolve_table  # noqa: E402
from expectations.suites import TABLES as SUITE_TABLES  # noqa: E402
from models_ml import warehouse as wh  # noqa: E402

SAMPLE_ROWS = 5

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass
class CheckResult:
    """The outcome of one named check (one GE expectation on one frame)."""

    table: str
    check: str
    expectation: str  # GE expectation type, e.g. expect_column_values_to_be_unique
    frame: str
    description: str
    status: str  # passed | failed | error | skipped
    unexpected_count: int | None = None  # offending values/rows
    element_count: int | None = None  # rows the expectation looked at
    observed: Any = None
    sample_rows: list[dict] = field(default_factory=list)
    message: str = ""

    @property
    def success(self) -> bool:
        return self.status in (PASSED, SKIPPED)


@dataclass
class SuiteResult:
    table: str
    rows: int | None
    results: list[CheckResult]
    seconds: float

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success]

    @property
    def n_passed(self) -> int:
        return sum(r.status == PASSED for r in self.results)

    def result(self, check: str) -> CheckResult:
        for r in self.results:
            if r.check == check:
                return r
        raise KeyError(f"suite {self.table} has no check {check!r}")


@dataclass
class ValidationReport:
    database: str
    suites: list[SuiteResult]
    seconds: float

    @property
    def success(self) -> bool:
        return all(s.success for s in self.suites)

    @property
    def failures(self) -> list[CheckResult]:
        return [f for s in self.suites for f in s.failures]

    def to_dict(self) -> dict:
        return {
            "database": self.database,
            "success": self.success,
            "seconds": round(self.seconds, 3),
            "suites": [
                {
                    "table": s.table,
                    "success": s.success,
                    "rows": s.rows,
                    "seconds": round(s.seconds, 3),
                    "results": [asdict(r) for r in s.results],
                }
                for s in self.suites
            ],
        }


# ---- GE plumbing -----------------------------------------------------------------


class _GE:
    """One ephemeral context with one pandas dataframe asset reused for every frame."""

    def __init__(self) -> None:
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = self.context.data_sources.add_pandas("warehouse").add_dataframe_asset("frame")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")

    def validate(self, df: pd.DataFrame, checks: list[Check], suite_name: str, samples: int) -> dict[str, Any]:
        suite = gx.ExpectationSuite(name=suite_name)
        for c in checks:
            c.expectation.meta = {"check": c.name}
            suite.add_expectation(c.expectation)
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": df})
        res = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": samples})
        return {r.expectation_config.meta["check"]: r for r in res.results}


_ge: _GE | None = None


def _context() -> _GE:
    global _ge
    if _ge is None:
        _ge = _GE()
    return _ge


# ---- JSON-safe sample rows ------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if v is None or v is pd.NaT or v is pd.NA:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else str(f)  # keep NaN/inf visible: they are often the defect
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (pd.Timestamp, dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, (np.ndarray, list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def _records(df: pd.DataFrame) -> list[dict]:
    return [{str(k): _jsonable(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _exception(r) -> str | None:
    info = r.exception_info or {}
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for sub in info.values():  # keyed by metric when several raised
        if isinstance(sub, dict) and sub.get("raised_exception"):
            return sub.get("exception_message")
    return None


def _to_result(table: str, check: Check, r, df: pd.DataFrame, samples: int) -> CheckResult:
    res = r.result or {}
    out = CheckResult(
        table=table,
        check=check.name,
        expectation=r.expectation_config.type,
        frame=check.frame,
        description=check.description,
        status=PASSED if r.success else FAILED,
        unexpected_count=res.get("unexpected_count"),
        element_count=res.get("element_count"),
        observed=_jsonable(res.get("observed_value")),
    )
    error = _exception(r)
    if error:
        out.status, out.message = ERROR, error
        return out
    if r.success:
        return out
    if check.frame not in (SCHEMA, TABLE):
        # a violations frame: its rows are the offenders
        out.unexpected_count = len(df)
        out.sample_rows = _records(df.head(samples))
    elif res.get("partial_unexpected_index_list"):
        idx = list(dict.fromkeys(res["partial_unexpected_index_list"]))[:samples]
        out.sample_rows = _records(df.loc[idx])
    elif res.get("partial_unexpected_list"):
        out.sample_rows = [{"value": _jsonable(v)} for v in res["partial_unexpected_list"][:samples]]
    return out


# ---- validation ----------------------------------------------------------------


def existing_tables(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Readable tables and views in the warehouse schemas (staging tables excluded).

    A view that cannot be read counts as absent: dbt-duckdb views name the catalog
    (the file's stem), so in a copied or renamed warehouse file they no longer bind.
    """
    rows = con.execute(
        "select table_schema, table_name, table_type from information_schema.tables "
        "where table_schema in ('raw', 'ml', 'main') and table_name not like '\\_\\_stage\\_%' escape '\\'"
    ).fetchall()
    out = set()
    for schema, name, kind in rows:
        if kind == "VIEW":
            try:
                con.execute(f'select * from "{schema}"."{name}" limit 0')
            except duckdb.Error:
                continue
        out.add(f"{schema}.{name}")
    return frozenset(out)


def _run_frame(
    ge: _GE, table: str, frame: str, df: pd.DataFrame, checks: list[Check], samples: int
) -> list[CheckResult]:
    results = ge.validate(df, checks, f"{table}:{frame}", samples)
    return [_to_result(table, c, results[c.name], df, samples) for c in checks]


def _failed_all(table: str, checks: Iterable[Check], status: str, message: str) -> list[CheckResult]:
    return [
        CheckResult(table, c.name, c.expectation.expectation_type, c.frame, c.description, status, message=message)
        for c in checks
    ]


def validate_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    params: Params | None = None,
    samples: int = SAMPLE_ROWS,
    existing: frozenset[str] | None = None,
) -> SuiteResult:
    """Validate one warehouse table against its suite.

    ``table``: one of :data:`expectations.TABLES` (short names like 'clusters' work).
    Never raises on bad data: every problem is a failed or errored CheckResult.
    """
    start = time.perf_counter()
    table = resolve_table(table)
    existing = existing_tables(con) if existing is None else existing
    if table not in existing:
        missing = CheckResult(
            table, "table_exists", "table_exists", SCHEMA, f"{table} exists", FAILED,
            message=f"table {table} does not exist in the warehouse; materialize its asset first",
        )  # fmt: skip
        return SuiteResult(table, None, [missing], time.perf_counter() - start)

    suite: Suite = build_suite(table, params, existing)
    ge = _context()
    by_frame: dict[str, list[Check]] = {}
    for c in suite.checks:
        by_frame.setdefault(c.frame, []).append(c)

    schema_name, _, name = table.rpartition(".")
    schema_df = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema_name, name],
    ).df()
    results = _run_frame(ge, table, SCHEMA, schema_df, by_frame.pop(SCHEMA), samples)
    missing_cols = [c for c in suite.columns if c not in set(schema_df["column_name"])]
    if missing_cols:
        for r in results:
            if r.check == "columns_present":
                r.message = f"missing column(s): {', '.join(missing_cols)}"
        rest = [c for checks in by_frame.values() for c in checks]
        msg = f"not run: {table} lacks required column(s) {', '.join(missing_cols)}"
        results += _failed_all(table, rest, SKIPPED, msg)
        return SuiteResult(table, None, results, time.perf_counter() - start)

    table_df = con.execute(suite.table_sql or f"select * from {table}").df()
    results += _run_frame(ge, table, TABLE, table_df, by_frame.pop(TABLE, []), samples)

    for frame, checks in by_frame.items():
        absent = [t for t in suite.requires.get(frame, ()) if t not in existing]
        if absent:
            msg = f"cannot check: needs table(s) {', '.join(absent)}, which do not exist"
            results += _failed_all(table, checks, ERROR, msg)
            continue
        try:
            df = con.execute(suite.queries[frame]).df()
        except duckdb.Error as exc:
            results += _failed_all(table, checks, ERROR, f"violations query failed: {exc}")
            continue
        results += _run_frame(ge, table, frame, df, checks, samples)

    return SuiteResult(table, len(table_df), results, time.perf_counter() - start)


def validate_warehouse(
    con_or_path: duckdb.DuckDBPyConnection | str | Path,
    tables: Iterable[str] | None = None,
    params: Params | None = None,
    samples: int = SAMPLE_ROWS,
) -> ValidationReport:
    """Validate ``tables`` (default: every table with a suite) of a warehouse, given
    an open connection or a file path (opened read-only)."""
    start = time.perf_counter()
    wanted = [resolve_table(t) for t in tables] if tables else list(SUITE_TABLES)
    params = params or Params.from_config()
    if isinstance(con_or_path, (str, Path)):
        with wh.connect(con_or_path, read_only=True) as con:
            return validate_warehouse(con, wanted, params, samples)
    con = con_or_path
    existing = existing_tables(con)
    suites = [validate_table(con, t, params, samples, existing) for t in wanted]
    db = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()
    return ValidationReport(str(db[0]) if db and db[0] else ":memory:", suites, time.perf_counter() - start)
