"""Data-quality gates (group `quality`): one Great Expectations asset check per
warehouse table with a suite (expectations/). The checks are blocking, so a table
that fails its suite stops every downstream asset in the run: a bad table never
flows silently into the lookup table or the recommendations.

Results carry the failing expectations, their counts and sample rows (markdown for
the UI, JSON for machines). dagster-ge requires GE < 1.0, hence these hand-written
checks (the README's data-quality section).
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    MetadataValue,
    asset_check,
)

from expectations import TABLES, SuiteResult, validate_table
from expectations.report import failure_summary, suite_markdown
from orchestration import keys
from orchestration.resources import WarehouseResource

GROUP = "quality"
CHECK_PREFIX = "ge_"
# Every suite gates its downstream assets: raw, cluster and training tables feed the
# LLM and the lookup table, which feeds the recommendations. Non-blocking would let a
# bad table flow on with only a red mark in the UI.
BLOCKING = frozenset(TABLES)


def check_name(table: str) -> str:
    return CHECK_PREFIX + table.rpartition(".")[2]


def check_result(result: SuiteResult) -> AssetCheckResult:
    """An AssetCheckResult showing the failing expectations and their sample rows."""
    failures = result.failures
    metadata = {
        "suite": result.table,
        "rows": MetadataValue.int(result.rows if result.rows is not None else 0),
        "expectations": MetadataValue.int(len(result.results)),
        "expectations_failed": MetadataValue.int(len(failures)),
        "seconds": MetadataValue.float(round(result.seconds, 3)),
    }
    if failures:  # a passing check shows no empty Markdown / JSON links
        metadata["failed_expectations"] = MetadataValue.md(suite_markdown(result))
        metadata["failures"] = MetadataValue.json(
            [
                {
                    "check": f.check,
                    "expectation": f.expectation,
                    "status": f.status,
                    "result": failure_summary(f),
                    "unexpected_count": f.unexpected_count,
                    "sample_rows": f.sample_rows,
                }
                for f in failures
            ]
        )
    if failures:
        names = ", ".join(f.check for f in failures[:8]) + (" ..." if len(failures) > 8 else "")
        description = f"{len(failures)} of {len(result.results)} expectations failed on {result.table}: {names}"
    else:
        description = f"all {len(result.results)} expectations passed on {result.table}"
    return AssetCheckResult(
        passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description,
    )


def ge_asset_check(table: str, asset_key: AssetKey | None = None, blocking: bool | None = None) -> AssetChecksDefinition:
    """The GE asset check for ``table`` (its suite), on ``asset_key`` (default: the
    table's own asset). Exposed so tests can attach it to toy assets."""
    key = asset_key or keys.asset_key(table)

    @asset_check(
        asset=key,
        name=check_name(table),
        blocking=table in BLOCKING if blocking is None else blocking,
        description=f"Great Expectations suite for {table} (expectations/suites.py)",
        metadata={"group": GROUP, "suite": table},
        op_tags={"group": GROUP},
    )
    def _check(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.connect() as con:
            result = validate_table(con, table)
        for f in result.failures:
            context.log.error(f"{table}: {f.check} [{f.expectation}] {failure_summary(f)}")
        return check_result(result)

    return _check


ge_checks = [ge_asset_check(t) for t in TABLES]

# Runs every quality gate against the current warehouse without materializing
# anything: define_asset_job("quality", selection=QUALITY_SELECTION).
QUALITY_SELECTION = AssetSelection.checks(*ge_checks)
