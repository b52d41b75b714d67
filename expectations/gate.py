"""Write, audit, publish: the suites run on a writer's staged tables before they are
published (``models_ml.warehouse`` calls :func:`audit` inside the write transaction,
after the swap and before the commit). A failing suite raises :class:`GateError`,
the transaction rolls back and the published tables stay as they were. The rules are
the suites' own (expectations/suites.py); nothing is restated here.
"""

from __future__ import annotations

import json

import duckdb

from expectations.report import failure_summary
from expectations.runner import SAMPLE_ROWS, SuiteResult, existing_tables, validate_table
from expectations.suites import TABLES
from models_ml.warehouse import PublishRefusedError


class GateError(PublishRefusedError):
    """Staged tables failed their suites; ``results`` holds every audited suite."""

    def __init__(self, results: list[SuiteResult]):
        self.results = results
        lines = []
        for s in results:
            for f in s.failures:
                sample = f"; e.g. {json.dumps(f.sample_rows[0], default=str)}" if f.sample_rows else ""
                lines.append(f"  {s.table}: {f.check} [{f.expectation}] {failure_summary(f)}{sample}")
        tables = ", ".join(s.table for s in results if not s.success)
        super().__init__(
            f"refusing to publish {tables}: the staged table(s) fail their Great Expectations suite; "
            f"the published tables are unchanged\n" + "\n".join(lines)
        )


def audit(con: duckdb.DuckDBPyConnection, tables: list[str], samples: int = SAMPLE_ROWS) -> list[SuiteResult]:
    """Validate ``tables`` that have a suite as ``con`` sees them (the writer's open
    transaction); raise :class:`GateError` if any fails. Tables without a suite pass."""
    gated = [t for t in tables if t in TABLES]
    if not gated:
        return []
    existing = existing_tables(con)
    results = [validate_table(con, t, samples=samples, existing=existing) for t in gated]
    if not all(r.success for r in results):
        raise GateError(results)
    return results
