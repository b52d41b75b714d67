"""Validation shared by every source: column checks, parsing of ids, timestamps and
engagement, and the row-level rules that set bad rows aside with a reason.

Sources read files (as strings where possible, so a bad value never stops the
reader) and hand the frames here; nothing is dropped without a row in
``rejected``. Each rejected row gets exactly one reason, the first that applies
in the order the rules are listed below.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

# ---- output schemas (raw.interactions, raw.items, raw.rejected_rows) ---------
INTERACTION_SCHEMA = {"user_id": pl.Utf8, "item_id": pl.Utf8, "event_ts": pl.Datetime("us"), "engagement": pl.Float64}
ITEM_SCHEMA = {"item_id": pl.Utf8, "title": pl.Utf8, "text": pl.Utf8}
REJECTED_SCHEMA = {"source_file": pl.Utf8, "row_number": pl.Int64, "reason": pl.Utf8, "raw_row": pl.Utf8}

# ---- rejection reasons (the one home of their wording) -----------------------
EMPTY_ROW = "empty row"
WRONG_FIELD_COUNT = "wrong number of fields"
NULL_USER_ID = "null user_id"
NULL_ITEM_ID = "null item_id"
NULL_EVENT_TS = "null event_ts"
UNPARSABLE_EVENT_TS = "unparsable event_ts"
EVENT_TS_OUT_OF_RANGE = "event_ts out of range"  # e.g. milliseconds read as seconds
NULL_ENGAGEMENT = "null engagement"
NON_NUMERIC_ENGAGEMENT = "non-numeric engagement"  # also NaN / infinity
UNKNOWN_ITEM_ID = "unknown item_id"
DUPLICATE_EVENT = "duplicate event"
ITEM_WITHOUT_TEXT = "item without text"
DUPLICATE_ITEM_ID = "duplicate item_id"
EMPTY_TAG = "empty tag"

# plausible event times; outside this the value is almost surely mis-scaled
TS_MIN = dt.datetime(1900, 1, 1)
TS_MAX = dt.datetime(2100, 1, 1)
TITLE_FROM_TEXT_CHARS = 80

_ROW = "__row"
_REASON = "__reason"


class IngestError(ValueError):
    """Input that cannot be ingested at all (missing files/columns, nothing valid)."""


@dataclass
class IngestResult:
    interactions: pl.DataFrame  # user_id, item_id, event_ts Datetime(us), engagement Float64
    items: pl.DataFrame  # item_id, title, text
    rejected: pl.DataFrame  # source_file, row_number, reason, raw_row (JSON)
    stats: dict  # JSON-serialisable summary for asset metadata
    truth: pl.DataFrame | None = None  # demo only: item_id, category, theme (ground truth for checks)


# ---- column and frame helpers -----------------------------------------------
def require_columns(columns: Iterable[str], file: str | Path, required: Sequence[str]) -> None:
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise IngestError(
            f"{file}: missing column(s) {', '.join(missing)}; found {', '.join(sorted(have)) or 'none'}"
        )


def empty_rejected() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECTED_SCHEMA)


def rejected_frame(df: pl.DataFrame, file: str, raw_cols: Sequence[str], reason: str | None = None,
                   row_col: str = _ROW) -> pl.DataFrame:
    """Rows of ``df`` as rejected rows; the reason is ``reason`` or the ``__reason`` column."""
    if df.height == 0:
        return empty_rejected()
    reason_expr = pl.lit(reason) if reason is not None else pl.col(_REASON)
    return df.select(
        pl.lit(file).alias("source_file"),
        pl.col(row_col).cast(pl.Int64).alias("row_number"),
        reason_expr.cast(pl.Utf8).alias("reason"),
        pl.struct([pl.col(c) for c in raw_cols]).struct.json_encode().alias("raw_row"),
    )


def with_row_numbers(df: pl.DataFrame) -> pl.DataFrame:
    """1-based data-row numbers (header excluded), unless the reader set them."""
    return df if _ROW in df.columns else df.with_row_index(_ROW, offset=1)


def clean_id(col: str) -> pl.Expr:
    """Ids as trimmed strings; empty means null. Integer-typed ids keep their digits."""
    s = pl.col(col).cast(pl.Utf8).str.strip_chars()
    return pl.when(s == "").then(None).otherwise(s).alias(col)


def clean_text(col: str) -> pl.Expr:
    s = pl.col(col).cast(pl.Utf8).str.strip_chars()
    return pl.when(s == "").then(None).otherwise(s).alias(col)


def all_null(cols: Sequence[str]) -> pl.Expr:
    """True where every raw column is null or blank (a blank line in a CSV)."""
    return pl.all_horizontal([pl.col(c).cast(pl.Utf8).str.strip_chars().fill_null("") == "" for c in cols])


def mark_empty_rows(bad: pl.DataFrame, raw_cols: Sequence[str]) -> pl.DataFrame:
    """Rejected rows with nothing in them are 'empty row' rather than their first null id
    (checked on the rejected rows only: it is the costly test)."""
    return bad.with_columns(pl.when(all_null(raw_cols)).then(pl.lit(EMPTY_ROW)).otherwise(pl.col(_REASON)).alias(_REASON))


# ---- value parsing -----------------------------------------------------------
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_TZ_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M%z")


def parse_event_ts(s: pl.Series) -> pl.Series:
    """Timestamps to naive UTC Datetime("us"); null where unparsable.

    Accepts datetime/date columns (time-zone aware ones are converted to UTC), numbers
    as unix seconds, and strings: unix seconds or ISO 8601 (``T`` or space, optional
    fraction, optional ``Z``/offset).
    """
    dtype = s.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            s = s.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return s.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return s.cast(pl.Datetime("us"))
    t = pl.col("t")
    if dtype.is_numeric():
        expr = _unix_seconds(t.cast(pl.Float64))
    else:
        as_int = s.cast(pl.Int64, strict=False)
        if as_int.null_count() == s.null_count():  # all integer unix seconds (MovieLens): the fast path
            return pl.DataFrame({"t": as_int}).select(_unix_seconds(t.cast(pl.Float64)).alias(s.name)).to_series()
        t = t.cast(pl.Utf8).str.strip_chars()
        unix = _unix_seconds(pl.when(t.str.contains(r"^-?\d+(\.\d+)?$")).then(t.cast(pl.Float64, strict=False)))
        fast = pl.DataFrame({"t": s}).select(unix.alias(s.name)).to_series()
        if fast.null_count() == s.null_count():  # all unix seconds (MovieLens): skip the ISO formats
            return fast
        iso = t.str.replace(r"^(\d{4}-\d{2}-\d{2})[Tt]", "$1 ").str.replace(r"[Zz]$", "+00:00")
        candidates = [unix]
        candidates += [iso.str.to_datetime(f, strict=False, time_unit="us") for f in _NAIVE_FORMATS]
        candidates += [
            iso.str.to_datetime(f, strict=False, time_unit="us").dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            for f in _TZ_FORMATS
        ]
        expr = pl.coalesce(candidates)
    return pl.DataFrame({"t": s}).select(expr.alias(s.name)).to_series()


def _unix_seconds(sec: pl.Expr) -> pl.Expr:
    ok = sec.is_finite() & (sec.abs() < 1e13)  # keeps the integer cast in range
    return pl.when(ok).then((sec * 1_000_000).round(0).cast(pl.Int64)).cast(pl.Datetime("us"))


def parse_engagement(s: pl.Series) -> pl.Series:
    """Float64; null where not a finite number."""
    e = pl.col("e")
    f = e.cast(pl.Float64) if s.dtype.is_numeric() else e.cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.DataFrame({"e": s}).select(pl.when(f.is_finite()).then(f).alias(s.name)).to_series()


# ---- row rules ----------------------------------------------------------------
def validate_items(
    df: pl.DataFrame,
    file: str,
    *,
    item_id: str,
    title: str,
    text: str,
    raw_cols: Sequence[str],
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Items (item_id, title, text) kept, rows rejected, and notes for stats.

    Rules, in order: empty row; null item_id; no title and no text ('item without
    text'); a repeated item_id ('duplicate item_id', the first valid row is kept).
    Fallbacks, counted in the notes: empty text -> the title; empty title -> the
    start of the text.
    """
    df = with_row_numbers(df)
    work = df.with_columns(
        clean_id(item_id).alias("__id"), clean_text(title).alias("__title"), clean_text(text).alias("__text")
    )
    reason = (
        pl.when(pl.col("__id").is_null()).then(pl.lit(NULL_ITEM_ID))
        .when(pl.col("__title").is_null() & pl.col("__text").is_null()).then(pl.lit(ITEM_WITHOUT_TEXT))
    )
    work = work.with_columns(reason.alias(_REASON))
    bad = mark_empty_rows(work.filter(pl.col(_REASON).is_not_null()), raw_cols)
    ok = work.filter(pl.col(_REASON).is_null()).with_columns(
        pl.when(~pl.col("__id").is_first_distinct()).then(pl.lit(DUPLICATE_ITEM_ID)).alias(_REASON)
    )
    dupes = ok.filter(pl.col(_REASON).is_not_null())
    ok = ok.filter(pl.col(_REASON).is_null())
    notes = {
        "items_text_from_title": int(ok["__text"].null_count()),
        "items_title_from_text": int(ok["__title"].null_count()),
    }
    t, x = pl.col("__title"), pl.col("__text")
    full_text = pl.coalesce(x, t)
    items = ok.select(
        pl.col("__id").alias("item_id"),
        pl.coalesce(t, x.str.slice(0, TITLE_FROM_TEXT_CHARS)).alias("title"),
        full_text.alias("text"),
    )
    rejected = pl.concat([rejected_frame(bad, file, raw_cols), rejected_frame(dupes, file, raw_cols)])
    return items, rejected, notes


def validate_interactions(
    df: pl.DataFrame,
    file: str,
    *,
    user_id: str,
    item_id: str,
    event_ts: str,
    engagement: str,
    raw_cols: Sequence[str],
    known_items: pl.Series,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Interactions kept and rows rejected.

    Rules, in order: empty row; null user_id; null item_id; null event_ts;
    unparsable event_ts; event_ts out of range (1900-2100); null engagement;
    non-numeric engagement; unknown item_id (not among the kept items); duplicate
    event (same user_id, item_id, event_ts as an earlier valid row, which is kept).
    """
    df = with_row_numbers(df)
    work = df.with_columns(
        clean_id(user_id).alias("__user"),
        clean_id(item_id).alias("__item"),
        parse_event_ts(df[event_ts]).alias("__ts"),
        parse_engagement(df[engagement]).alias("__eng"),
    )
    ts, eng = pl.col("__ts"), pl.col("__eng")
    reason = (
        pl.when(pl.col("__user").is_null()).then(pl.lit(NULL_USER_ID))
        .when(pl.col("__item").is_null()).then(pl.lit(NULL_ITEM_ID))
        .when(clean_text(event_ts).is_null()).then(pl.lit(NULL_EVENT_TS))
        .when(ts.is_null()).then(pl.lit(UNPARSABLE_EVENT_TS))
        .when((ts < TS_MIN) | (ts >= TS_MAX)).then(pl.lit(EVENT_TS_OUT_OF_RANGE))
        .when(clean_text(engagement).is_null()).then(pl.lit(NULL_ENGAGEMENT))
        .when(eng.is_null()).then(pl.lit(NON_NUMERIC_ENGAGEMENT))
        .when(~pl.col("__item").is_in(known_items.cast(pl.Utf8).implode())).then(pl.lit(UNKNOWN_ITEM_ID))
    )
    work = work.with_columns(reason.alias(_REASON))
    bad = mark_empty_rows(work.filter(pl.col(_REASON).is_not_null()), raw_cols)
    ok = work.filter(pl.col(_REASON).is_null())
    # exact duplicate check only among rows whose key hash repeats (hashing is ~15x faster than
    # is_first_distinct over a struct of strings)
    keys = ("__user", "__item", "__ts")
    suspects = ok.filter(pl.struct(keys).hash(seed=0).is_duplicated())
    dup_rows = suspects.filter(~pl.struct(keys).is_first_distinct())[_ROW]
    is_dup = pl.col(_ROW).is_in(dup_rows.implode())
    dupes = ok.filter(is_dup).with_columns(pl.lit(DUPLICATE_EVENT).alias(_REASON))
    ok = ok.filter(~is_dup)
    interactions = ok.select(
        pl.col("__user").alias("user_id"),
        pl.col("__item").alias("item_id"),
        ts.alias("event_ts"),
        eng.alias("engagement"),
    )
    rejected = pl.concat([rejected_frame(bad, file, raw_cols), rejected_frame(dupes, file, raw_cols)])
    return interactions, rejected


def finalize(
    source: str,
    path: Path | None,
    *,
    items: pl.DataFrame,
    interactions: pl.DataFrame,
    rejected: Sequence[pl.DataFrame],
    rows_read: dict[str, int],
    notes: dict | None = None,
    truth: pl.DataFrame | None = None,
) -> IngestResult:
    """Assemble the result and its stats; no valid interactions is an error."""
    rej = pl.concat([r.select(list(REJECTED_SCHEMA)).cast(REJECTED_SCHEMA) for r in rejected] or [empty_rejected()])
    rej = rej.sort("source_file", "row_number", maintain_order=True)
    by_reason = {r: int(n) for r, n in rej.group_by("reason").len().sort("len", "reason", descending=[True, False]).iter_rows()}
    by_file: dict[str, dict[str, int]] = {}
    for f, r, n in rej.group_by("source_file", "reason").len().sort("source_file", "reason").iter_rows():
        by_file.setdefault(f, {})[r] = int(n)
    where = f"{source} source" + (f" at {path}" if path is not None else "")
    if interactions.height == 0:
        raise IngestError(
            f"{where}: no valid interactions remain after validation (rows read: {rows_read}; "
            f"rejected: {by_file or 'none'}; items kept: {items.height})"
        )
    interactions = interactions.select(list(INTERACTION_SCHEMA)).cast(INTERACTION_SCHEMA)
    items = items.select(list(ITEM_SCHEMA)).cast(ITEM_SCHEMA)
    stats = {
        "source": source,
        "path": str(path) if path is not None else None,
        "rows_read": dict(rows_read),
        "interactions_kept": interactions.height,
        "items_kept": items.height,
        "users": int(interactions["user_id"].n_unique()),
        "items_without_interactions": int((~items["item_id"].is_in(interactions["item_id"].unique().implode())).sum()),
        "rejected_total": rej.height,
        "rejected": by_reason,
        "rejected_by_file": by_file,
        **(notes or {}),
    }
    return IngestResult(interactions=interactions, items=items, rejected=rej, stats=stats, truth=truth)
