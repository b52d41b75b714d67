"""Great Expectations suites for the warehouse and the runner used by the Dagster
asset checks and by CI (``python -m expectations validate --db FILE``)."""

import warnings

# great_expectations imports pyspark when the .[spark] extra is installed; pyspark's pandas
# version warning would be a reader's stray stderr lines (its one-line errors, exit 75).
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

from expectations.gate import GateError, audit
from expectations.runner import CheckResult, SuiteResult, ValidationReport, validate_table, validate_warehouse
from expectations.suites import TABLES, Params, build_suite, resolve_table

__all__ = [
    "TABLES",
    "audit",
    "CheckResult",
    "GateError",
    "Params",
    "SuiteResult",
    "ValidationReport",
    "build_suite",
    "resolve_table",
    "validate_table",
    "validate_warehouse",
]
