"""Human-readable rendering of validation results (terminal and Dagster markdown)."""

from __future__ import annotations

import json

from expectations.runner import CheckResult, SuiteResult, ValidationReport

_MAX_CELL = 60


def _cell(v) -> str:
    # blank strings are quoted: they are often the defect being shown
    s = v if isinstance(v, str) and v.strip() else json.dumps(v)
    s = s.replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= _MAX_CELL else s[: _MAX_CELL - 3] + "..."


def rows_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    body = ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join([head, *body])


def failure_summary(r: CheckResult) -> str:
    if r.message:
        return r.message.strip().splitlines()[0]  # the full text stays in the JSON results
    if r.unexpected_count is not None:
        noun = "offending row" if r.frame not in ("schema", "table") else "unexpected value"
        what = noun if r.unexpected_count == 1 else noun + "s"
        total = f" of {r.element_count}" if r.element_count is not None and r.frame == "table" else ""
        return f"{r.unexpected_count}{total} {what}"
    return f"observed {json.dumps(r.observed)}"


def suite_markdown(s: SuiteResult) -> str:
    """Markdown for one suite: the failing checks and their sample rows."""
    if s.success:
        return f"All {s.n_passed} expectations passed on {s.table} ({s.rows} rows)."
    out = [f"**{len(s.failures)} of {len(s.results)} expectations failed on {s.table}**", ""]
    out += ["| check | expectation | result |", "|---|---|---|"]
    out += [f"| {r.check} | {r.expectation} | {_cell(failure_summary(r))} |" for r in s.failures]
    for r in s.failures:
        if r.sample_rows:
            out += ["", f"**{r.check}**: {r.description or r.expectation} — sample rows", "", rows_markdown(r.sample_rows)]
    return "\n".join(out)


def _text_rows(rows: list[dict], indent: str) -> list[str]:
    if not rows:
        return []
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: indent + "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return [line(cols), *(line(row) for row in cells)]


def format_report(report: ValidationReport) -> str:
    """The terminal report printed by ``python -m expectations validate``."""
    n_checks = sum(len(s.results) for s in report.suites)
    n_failed = len(report.failures)
    n_bad_suites = sum(not s.success for s in report.suites)
    lines = [
        f"Great Expectations: {report.database}",
        f"{len(report.suites)} tables, {n_checks} expectations, {n_failed} failed "
        f"({len(report.suites) - n_bad_suites} tables passed, {n_bad_suites} failed) in {report.seconds:.1f} s",
        "",
    ]
    width = max((len(s.table) for s in report.suites), default=10)
    for s in report.suites:
        rows = f"{s.rows:>9,} rows" if s.rows is not None else "        - rows"
        status = "PASS" if s.success else "FAIL"
        lines.append(f"{status}  {s.table:<{width}}  {rows}  {s.n_passed:>3}/{len(s.results):<3} passed  {s.seconds:5.2f} s")
        for r in s.failures:
            lines.append(f"      x {r.check}  [{r.expectation}]  {failure_summary(r)}")
            if r.description:
                lines.append(f"        {r.description}")
            lines += _text_rows(r.sample_rows, "          ")
        skipped = [r for r in s.results if r.status == "skipped"]
        if skipped:
            lines.append(f"      - {len(skipped)} checks not run: {skipped[0].message}")
    lines += ["", "PASSED" if report.success else f"FAILED: {n_failed} expectation(s) failed"]
    return "\n".join(lines)
