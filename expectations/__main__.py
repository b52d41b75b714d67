"""``python -m expectations validate --db FILE [--tables T ...] [--json OUT]``

Validates a warehouse file against the GE suites, prints a readable report and
exits 1 when any expectation fails, so CI can gate on it; 2 on usage errors (no such
file or table), 75 when another process kept the file locked for IE_LOCK_TIMEOUT_S.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expectations", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    val = sub.add_parser("validate", help="validate a warehouse file against the expectation suites")
    val.add_argument("--db", required=True, type=Path, help="DuckDB warehouse file")
    val.add_argument("--tables", nargs="+", metavar="TABLE", help="tables to validate (default: all with a suite)")
    val.add_argument("--json", type=Path, metavar="OUT", help="also write the structured results as JSON")
    val.add_argument("--samples", type=int, default=5, help="sample rows shown per failing expectation")
    args = parser.parse_args(argv)

    if not args.db.exists():
        print(f"error: warehouse file {args.db} does not exist (run `make demo` first)", file=sys.stderr)
        return 2
    from expectations.report import format_report
    from expectations.runner import validate_warehouse
    from expectations.suites import resolve_table

    try:
        tables = [resolve_table(t) for t in args.tables] if args.tables else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from models_ml.warehouse import EXIT_BUSY, WarehouseBusyError

    try:
        report = validate_warehouse(args.db, tables, samples=args.samples)
    except WarehouseBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
