"""Asset metadata helpers shared by the asset modules: Dagster's standard keys
(``dagster/row_count``, ``dagster/column_schema``) from the one declaration of the
tables Python writes (models_ml/tables.py), the warehouse and source every asset was
built from, refresh-gate check results, small Markdown tables and embedded images."""

from __future__ import annotations

import base64
from pathlib import Path

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, TableColumn, TableSchema

from models_ml import config, tables

WAREHOUSE_KEY = "warehouse"
SOURCE_KEY = "source"


def markdown_table(df: pl.DataFrame) -> str:
    """A small frame as a Markdown table for the Dagster UI (floats to 4 places)."""
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(fmt(v) for v in row) + " |" for row in df.iter_rows())


def provenance() -> dict:
    """The warehouse file written and the source it was built from: the UI of a Dagster
    home shared by several warehouses still says which one a materialization is."""
    path = config.source_path()
    return {
        WAREHOUSE_KEY: MetadataValue.path(str(config.database_path())),
        SOURCE_KEY: config.source() + (f" ({path})" if path is not None else ""),
    }


def column_schema(table: str) -> TableSchema:
    """The table's columns with their DuckDB types and descriptions (models_ml/tables.py)."""
    return TableSchema(columns=[
        TableColumn(c.name, tables.duckdb_type(c.dtype), description=c.description)
        for c in tables.table(table).columns
    ])


def table_metadata(table: str, rows: int) -> dict:
    """Row count, column schema and provenance of a table Python wrote."""
    return {
        "dagster/row_count": MetadataValue.int(int(rows)),
        "dagster/column_schema": column_schema(table),
        **provenance(),
    }


def image_markdown(png: Path, alt: str) -> MetadataValue:
    """A PNG embedded in Markdown (base64), so the asset page shows the picture itself."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def gate_figures(gate, prefix: str = "") -> dict[str, MetadataValue]:
    """A refresh gate's (models_ml.gates.GateResult) figures as float metadata."""
    return {prefix + k: MetadataValue.float(float(v)) for k, v in gate.figures.items()}


def gate_check_result(gate, **metadata) -> AssetCheckResult:
    """A refresh gate (models_ml.gates.GateResult) as a check result: ERROR severity, so a
    blocking check that fails stops every downstream asset; its figures stay floats."""
    return AssetCheckResult(
        passed=gate.passed,
        severity=AssetCheckSeverity.ERROR,
        description=gate.summary(),
        metadata={**gate_figures(gate), **metadata},
    )
