"""Validation shared by every source: column types, parsing of ids, timestamps and
engagement, the row-level rules that set bad rows aside with a reason, and the
reject-rate gate.

Sources read files (as strings where possible, so a bad value never stops the
reader) and hand the frames here; nothing is dropped without a row in
``rejected``. Each rejected row gets exactly one reason, the first that applies
in the order the rules are listed below.

The one home of the input rules (README "Input rules"):

- every raw column has a declared kind (:data:`COLUMN_KINDS`); a typed column (Parquet,
  a generated frame) of another type refuses the file, naming the column, the type and
  an example value;
- :data:`NULL_TOKENS` are nulls in every id, timestamp and engagement string;
- timestamps are ISO-8601 strings (:data:`ISO_TIMESTAMP`), timestamp or date columns,
  or integer unix epochs in ``IE_TS_UNIT`` (s, ms or us), inside ``IE_TS_MIN`` ..
  ``IE_TS_MAX``; nothing else is guessed (compact dates, time-zone names, floats and a
  column mixing ISO strings with epochs are rejected rows with their own reasons).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import polars as pl

from models_ml import config, tables

# ---- output schemas (raw.interactions, raw.items, raw.rejected_rows) ---------
INTERACTION_SCHEMA = {"user_id": pl.Utf8, "item_id": pl.Utf8, "event_ts": pl.Datetime("us"), "engagement": pl.Float64}
ITEM_SCHEMA = {"item_id": pl.Utf8, "title": pl.Utf8, "text": pl.Utf8}
REJECTED_SCHEMA = tables.schema(config.RAW_REJECTED_ROWS)

# ---- rejection reasons (the one home of their wording) -----------------------
EMPTY_ROW = "empty row"
WRONG_FIELD_COUNT = "wrong number of fields"
NULL_USER_ID = "null user_id"
NULL_ITEM_ID = "null item_id"
NULL_EVENT_TS = "null event_ts"
UNPARSABLE_EVENT_TS = "unparsable event_ts"  # none of the accepted encodings
EVENT_TS_TIME_ZONE_NAME = "event_ts with a time-zone name (use Z or +hh:mm)"
EVENT_TS_COMPACT_DATE = "event_ts is a compact date (YYYYMMDD), not a unix time"
EVENT_TS_MIXED = "event_ts encoding differs from the rest of its column"  # ISO strings mixed with epochs
EVENT_TS_OUT_OF_RANGE = "event_ts out of range"  # outside IE_TS_MIN..IE_TS_MAX, e.g. ms read as s
NULL_ENGAGEMENT = "null engagement"
NON_NUMERIC_ENGAGEMENT = "non-numeric engagement"  # also NaN / infinity
NEGATIVE_ENGAGEMENT = "negative engagement"
REJECTED_ITEM = "item_id of a rejected item"  # followed by the item's own reason
ITEM_ID_FORMAT = "item_id matches an item only as a number (leading zeros or '.0')"
UNKNOWN_ITEM_ID = "unknown item_id"
DUPLICATE_EVENT = "duplicate event"
ITEM_WITHOUT_TEXT = "item without text"
DUPLICATE_ITEM_ID = "duplicate item_id"
EMPTY_TAG = "empty tag"

# Null-like tokens, compared case-insensitively after trimming (ids, timestamps, engagement).
NULL_TOKENS = ("", "null", "none", "nan", "na", "n/a", "nil", "-")
# What trimming removes: Python's whitespace (str.isspace), the same the GE gates call blank.
WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())

# ---- column kinds: the declared type of every raw column ------------------------
ID, TIMESTAMP, NUMBER, TEXT = "id", "timestamp", "number", "text"
COLUMN_KINDS = {
    "user_id": ID, "item_id": ID, "event_ts": TIMESTAMP, "engagement": NUMBER, "title": TEXT, "text": TEXT,
}
ACCEPTED_TYPES = {
    ID: "strings or integers",
    TIMESTAMP: "timestamp or date columns, integer unix epochs (unit IE_TS_UNIT) or ISO-8601 strings",
    NUMBER: "numbers or numeric strings",
    TEXT: "strings",
}

# ISO-8601: date, or date and time with `T` or a space, optional seconds and fraction, and
# optionally Z or a +hh:mm offset (converted to UTC; without one the time is UTC)
ISO_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}:\d{2})?)?$"
EPOCH = r"^-?\d{1,18}$"  # integer unix time in IE_TS_UNIT
_TZ_NAME = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*\[?[A-Za-z][A-Za-z0-9_/+\-]*\]?$"
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_TZ_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M%z")
TITLE_FROM_TEXT_CHARS = 80

_ROW = "__row"
_REASON = "__reason"


class IngestError(ValueError):
    """Input that cannot be ingested at all (missing files/columns, wrong column types,
    nothing valid, too many rejected rows)."""


class RejectRateError(IngestError):
    """Too many rows of a file were rejected: the run stops and publishes nothing."""


@dataclass
class IngestResult:
    interactions: pl.DataFrame  # user_id, item_id, event_ts Datetime(us), engagement Float64
    items: pl.DataFrame  # item_id, title, text
    rejected: pl.DataFrame  # source_file, row_number, reason, raw_row (JSON)
    stats: dict  # JSON-serialisable summary for asset metadata
    truth: pl.DataFrame | None = None  # demo only: item_id, category, theme (ground truth for checks)


class ItemsValidation(NamedTuple):
    items: pl.DataFrame  # item_id, title, text
    rejected: pl.DataFrame  # rejected rows
    notes: dict  # counts for stats
    rejected_ids: pl.DataFrame  # item_id, reason: ids whose every row was rejected (events on them say so)


# ---- column and frame helpers -----------------------------------------------
def require_columns(columns: Iterable[str], file: str | Path, required: Sequence[str]) -> None:
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise IngestError(
            f"{file}: missing column(s) {', '.join(missing)}; found {', '.join(sorted(have)) or 'none'}"
        )


def _accepts(kind: str, dtype: pl.DataType) -> bool:
    if dtype == pl.Null or dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return True
    if kind == ID:
        return dtype.is_integer()
    if kind == TIMESTAMP:
        return dtype.is_integer() or isinstance(dtype, pl.Datetime) or dtype == pl.Date
    if kind == NUMBER:
        return dtype.is_numeric()
    return False


def check_types(df: pl.DataFrame, file: str | Path, columns: dict[str, str]) -> None:
    """Refuse the file when a typed column (Parquet, a generated frame) is not of its
    declared kind (``columns``: source column -> kind), naming the type and an example."""
    for col, kind in columns.items():
        dtype = df.schema[col]
        if _accepts(kind, dtype):
            continue
        values = df.get_column(col).drop_nulls().head(1).to_list()
        example = repr(values[0]) if values else "only nulls"
        example = example if len(example) <= 60 else example[:57] + "..."
        hint = ""
        if kind == ID and dtype.is_float():
            hint = " (an integer id column with missing values becomes float when written by pandas: write it as Int64 or strings)"
        raise IngestError(
            f"{file}: column {col} has type {dtype} (e.g. {example}); {kind} columns accept "
            f"{ACCEPTED_TYPES[kind]}{hint}"
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


def _trimmed(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Utf8).str.strip_chars(WHITESPACE)


def clean_id(col: str) -> pl.Expr:
    """Ids as trimmed strings; blank and :data:`NULL_TOKENS` mean null. Integer-typed ids
    keep their digits."""
    return clean_value(col)


def clean_value(col: str) -> pl.Expr:
    """A trimmed string; null where blank or a null-like token."""
    s = _trimmed(col)
    return pl.when(s.str.to_lowercase().is_in(list(NULL_TOKENS))).then(None).otherwise(s).alias(col)


def clean_text(col: str) -> pl.Expr:
    """Trimmed text; null only where blank (text is kept verbatim otherwise)."""
    s = _trimmed(col)
    return pl.when(s == "").then(None).otherwise(s).alias(col)


def all_null(cols: Sequence[str]) -> pl.Expr:
    """True where every raw column is null, blank or a null token (a blank CSV line)."""
    return pl.all_horizontal([clean_value(c).is_null() for c in cols])


def mark_empty_rows(bad: pl.DataFrame, raw_cols: Sequence[str]) -> pl.DataFrame:
    """Rejected rows with nothing in them are 'empty row' rather than their first null id
    (checked on the rejected rows only: it is the costly test)."""
    return bad.with_columns(pl.when(all_null(raw_cols)).then(pl.lit(EMPTY_ROW)).otherwise(pl.col(_REASON)).alias(_REASON))


# ---- CSV ------------------------------------------------------------------------
def read_csv_strings(file: Path, required: Sequence[str], data: bytes | None = None) -> pl.DataFrame:
    """A headed CSV with every column as a string (bad values are judged later, not
    here). A line whose field count differs from the header's refuses the file, naming
    the line: its values would land in the wrong columns."""
    source = data if data is not None else file
    try:
        df = pl.read_csv(source, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        _refuse_ragged(file, data)
        raise IngestError(f"{file}: cannot be read as CSV: {str(exc).splitlines()[0]}") from exc
    require_columns(df.columns, file, required)
    if df.width and df.get_column(df.columns[-1]).null_count():
        _refuse_ragged(file, data)  # short lines read as trailing nulls: look closer
    return df


def _refuse_ragged(file: Path, data: bytes | None) -> None:
    try:
        text = (data if data is not None else file.read_bytes()).decode("utf-8-sig")
    except (UnicodeDecodeError, OSError):
        return  # the reader's own error names the problem
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        bad, line = [], reader.line_num + 1
        for record in reader:
            if record and len(record) != len(header):
                bad.append((line, len(record)))
                if len(bad) > 3:
                    break
            line = reader.line_num + 1
    except csv.Error as exc:
        raise IngestError(f"{file}: line {reader.line_num}: {exc}") from exc
    if bad:
        first, n = bad[0]
        more = f" (also line {', '.join(str(b[0]) for b in bad[1:4])})" if len(bad) > 1 else ""
        raise IngestError(
            f"{file}: line {first} has {n} field(s) where the header has {len(header)}{more}; "
            "quote values that contain the separator"
        )


# ---- value parsing -----------------------------------------------------------
def parse_event_ts(s: pl.Series, unit: str | None = None,
                   ts_range: tuple[dt.datetime, dt.datetime] | None = None) -> pl.DataFrame:
    """Timestamps to naive UTC Datetime("us") with the reason a value is refused.

    Returns columns ``ts`` and ``problem`` (null where the value is accepted or null).
    Accepted (the one home of the encodings): timestamp columns (time-zone aware ones
    converted to UTC, naive ones taken as UTC), date columns, integer unix epochs in
    ``unit`` (default IE_TS_UNIT), and strings that are ISO-8601 (:data:`ISO_TIMESTAMP`)
    or integer epochs. A string column holding both ISO values and epochs keeps the
    more common encoding; the other rows get :data:`EVENT_TS_MIXED`. Every value must
    lie in ``ts_range`` (default IE_TS_MIN..IE_TS_MAX).
    """
    unit = unit or config.ts_unit()
    lo, hi = ts_range or config.ts_range()
    dtype = s.dtype
    frame = pl.DataFrame({"t": s})
    t = pl.col("t")
    if isinstance(dtype, pl.Datetime):
        ts = (t.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone is not None else t)
        out = frame.select(ts.cast(pl.Datetime("us")).alias("ts"), pl.lit(None, pl.Utf8).alias("problem"))
    elif dtype == pl.Date:
        out = frame.select(t.cast(pl.Datetime("us")).alias("ts"), pl.lit(None, pl.Utf8).alias("problem"))
    elif dtype.is_integer():
        out = frame.select(_epoch(t.cast(pl.Int64), unit).alias("ts"), pl.lit(None, pl.Utf8).alias("problem"))
        out = out.with_columns(pl.Series("__epoch", s.cast(pl.Int64)))
    else:
        out = _parse_ts_strings(frame, unit)
    epoch = pl.col("__epoch") if "__epoch" in out.columns else pl.lit(None, pl.Int64)
    ts, problem = pl.col("ts"), pl.col("problem")
    out = out.with_columns(
        pl.when(problem.is_not_null()).then(problem)
        .when(epoch.is_not_null() & (ts.is_null() | (ts < lo) | (ts >= hi)) & _compact_date(epoch))
        .then(pl.lit(EVENT_TS_COMPACT_DATE))
        .when(epoch.is_not_null() & ts.is_null()).then(pl.lit(EVENT_TS_OUT_OF_RANGE))  # beyond Int64 microseconds
        .when((ts < lo) | (ts >= hi)).then(pl.lit(EVENT_TS_OUT_OF_RANGE))
        .alias("problem")
    )
    return out.select(pl.when(pl.col("problem").is_null()).then(ts).alias("ts"), "problem")


def _epoch(v: pl.Expr, unit: str) -> pl.Expr:
    factor = config.TS_UNITS[unit]
    limit = (2**63 - 1) // factor
    return pl.when(v.abs() <= limit).then(v * factor).cast(pl.Datetime("us"))


def _compact_date(v: pl.Expr) -> pl.Expr:
    """An integer that reads as YYYYMMDD (1900..2100): refused, never read as a unix time."""
    return v.is_between(19000101, 21001231) & ((v // 100) % 100).is_between(1, 12) & (v % 100).is_between(1, 31)


def _parse_ts_strings(frame: pl.DataFrame, unit: str) -> pl.DataFrame:
    t = clean_value("t")
    work = frame.select(
        t.alias("s"),
        t.str.contains(ISO_TIMESTAMP).fill_null(False).alias("__iso"),
        t.str.contains(EPOCH).fill_null(False).alias("__is_epoch"),
    )
    n_iso, n_epoch = int(work["__iso"].sum()), int(work["__is_epoch"].sum())
    keep_epochs = n_epoch > n_iso  # the column's encoding; ties keep ISO
    s, is_iso, is_epoch = pl.col("s"), pl.col("__iso"), pl.col("__is_epoch")
    iso = s.str.replace(r"^(\d{4}-\d{2}-\d{2})[Tt ]", "$1 ").str.replace(r"[Zz]$", "+00:00")
    naive = pl.coalesce([iso.str.to_datetime(f, strict=False, time_unit="us") for f in _NAIVE_FORMATS])
    aware = pl.coalesce([
        iso.str.to_datetime(f, strict=False, time_unit="us").dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        for f in _TZ_FORMATS
    ])
    epoch_value = pl.when(is_epoch).then(s.cast(pl.Int64, strict=False))
    mixed = (is_iso & pl.lit(keep_epochs)) | (is_epoch & pl.lit(not keep_epochs and n_iso > 0))
    out = work.with_columns(
        pl.when(is_iso).then(pl.when(s.str.contains(r"(?:[Zz]|[+-]\d{2}:\d{2})$")).then(aware).otherwise(naive))
        .otherwise(_epoch(epoch_value, unit)).alias("ts"),
        epoch_value.alias("__epoch"),
    )
    ts = pl.col("ts")
    problem = (
        pl.when(s.is_null()).then(None)
        .when(mixed).then(pl.lit(EVENT_TS_MIXED))
        .when(is_iso & ts.is_null()).then(pl.lit(UNPARSABLE_EVENT_TS))  # ISO-shaped, no such date (2024-02-30)
        .when(is_iso | is_epoch).then(None)
        .when(s.str.contains(_TZ_NAME)).then(pl.lit(EVENT_TS_TIME_ZONE_NAME))
        .otherwise(pl.lit(UNPARSABLE_EVENT_TS))
    )
    return out.select("ts", problem.alias("problem"), "__epoch")


def parse_engagement(s: pl.Series) -> pl.Series:
    """Float64; null where not a finite number."""
    e = pl.col("e")
    f = e.cast(pl.Float64) if s.dtype.is_numeric() else clean_value("e").cast(pl.Float64, strict=False)
    return pl.DataFrame({"e": s}).select(pl.when(f.is_finite()).then(f).alias(s.name)).to_series()


def _number_key(col: pl.Expr) -> pl.Expr:
    """An id that is a number, without leading zeros or a '.0' fraction ('007', '7.0' -> '7')."""
    return col.str.extract(r"^0*(\d+?)(?:\.0+)?$", 1)


# ---- row rules ----------------------------------------------------------------
def validate_items(
    df: pl.DataFrame,
    file: str,
    *,
    item_id: str,
    title: str,
    text: str,
    raw_cols: Sequence[str],
) -> ItemsValidation:
    """Items (item_id, title, text) kept, rows rejected, notes for stats, and the ids
    that were rejected outright.

    Rules, in order: empty row; null item_id; no title and no text ('item without
    text'); a repeated item_id ('duplicate item_id', the first valid row is kept).
    Fallbacks, counted in the notes: empty text -> the title; empty title -> the
    start of the text.
    """
    check_types(df, file, {col: COLUMN_KINDS[kind] for kind, col in (("item_id", item_id), ("title", title), ("text", text))})
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
    rejected_ids = (
        bad.filter(pl.col("__id").is_not_null() & ~pl.col("__id").is_in(items["item_id"].implode()))
        .unique("__id", keep="first", maintain_order=True)
        .select(pl.col("__id").alias("item_id"), pl.col(_REASON).alias("reason"))
    )
    rejected = pl.concat([rejected_frame(bad, file, raw_cols), rejected_frame(dupes, file, raw_cols)])
    return ItemsValidation(items, rejected, notes, rejected_ids)


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
    rejected_items: pl.DataFrame | None = None,
    ts_unit: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Interactions kept and rows rejected.

    Rules, in order: empty row; null user_id; null item_id; null event_ts; a refused
    event_ts (see :func:`parse_event_ts`: unparsable, time-zone name, mixed encodings,
    compact date, out of range); null engagement; non-numeric engagement; negative
    engagement; the item was rejected ('item_id of a rejected item: <its reason>',
    ``rejected_items``); the item_id matches a kept item only as a number ('007' or
    '7.0' for '7'); unknown item_id (not among the kept items); duplicate event (same
    user_id, item_id, event_ts as an earlier valid row, which is kept). ``ts_unit``:
    the unit of integer timestamps (default IE_TS_UNIT).
    """
    check_types(df, file, {col: COLUMN_KINDS[kind] for kind, col in
                           (("user_id", user_id), ("item_id", item_id), ("event_ts", event_ts), ("engagement", engagement))})
    df = with_row_numbers(df)
    parsed = parse_event_ts(df[event_ts], ts_unit)
    work = df.with_columns(
        clean_id(user_id).alias("__user"),
        clean_id(item_id).alias("__item"),
        parsed["ts"].alias("__ts"),
        parsed["problem"].alias("__ts_problem"),
        parse_engagement(df[engagement]).alias("__eng"),
    )
    known = known_items.cast(pl.Utf8)
    known_keys = known.to_frame("k").select(_number_key(pl.col("k"))).to_series().drop_nulls()
    rejected_items = rejected_items if rejected_items is not None else pl.DataFrame(
        schema={"item_id": pl.Utf8, "reason": pl.Utf8})
    work = work.join(
        rejected_items.select(pl.col("item_id").alias("__item"), pl.col("reason").alias("__item_reason")),
        on="__item", how="left", maintain_order="left",
    )
    eng = pl.col("__eng")
    item = pl.col("__item")
    raw_ts = df.schema[event_ts]
    ts_blank = clean_value(event_ts).is_null() if not raw_ts.is_temporal() else pl.col(event_ts).is_null()
    raw_eng_blank = (clean_value(engagement).is_null() if not df.schema[engagement].is_numeric()
                     else pl.col(engagement).is_null())
    reason = (
        pl.when(pl.col("__user").is_null()).then(pl.lit(NULL_USER_ID))
        .when(item.is_null()).then(pl.lit(NULL_ITEM_ID))
        .when(ts_blank).then(pl.lit(NULL_EVENT_TS))
        .when(pl.col("__ts_problem").is_not_null()).then(pl.col("__ts_problem"))
        .when(raw_eng_blank).then(pl.lit(NULL_ENGAGEMENT))
        .when(eng.is_null()).then(pl.lit(NON_NUMERIC_ENGAGEMENT))
        .when(eng < 0).then(pl.lit(NEGATIVE_ENGAGEMENT))
        .when(pl.col("__item_reason").is_not_null()).then(pl.format(f"{REJECTED_ITEM}: {{}}", pl.col("__item_reason")))
        .when(~item.is_in(known.implode()) & _number_key(item).is_in(known_keys.implode()))
        .then(pl.lit(ITEM_ID_FORMAT))
        .when(~item.is_in(known.implode())).then(pl.lit(UNKNOWN_ITEM_ID))
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
        pl.col("__ts").alias("event_ts"),
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
        "reject_share_by_file": {
            f: round(sum(by_file.get(f, {}).values()) / n, 6) for f, n in rows_read.items() if n
        },
        **(notes or {}),
    }
    return IngestResult(interactions=interactions, items=items, rejected=rej, stats=stats, truth=truth)


# ---- the reject-rate gate -------------------------------------------------------------
def check_reject_shares(result: IngestResult, max_share: float | None = None, samples: int = 3) -> list[str]:
    """The reject-rate gate, per source file: a share of rejected rows above ``max_share``
    (default IE_MAX_REJECT_SHARE) raises :class:`RejectRateError` naming the files, their
    top reasons and sample rows; files with some rejected rows below it give one warning
    line each (returned)."""
    max_share = config.max_reject_share() if max_share is None else max_share
    over, warnings = [], []
    for file, n in result.stats["rows_read"].items():
        rej = result.rejected.filter(pl.col("source_file") == file)
        if not n or not rej.height:
            continue
        share = rej.height / n
        line = f"{file}: {rej.height} of {n} rows rejected ({share:.1%})"
        reasons = rej.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
        top = "; ".join(f"{r} {c}" for r, c in reasons.head(3).iter_rows())
        if share <= max_share:
            warnings.append(f"{line}, within IE_MAX_REJECT_SHARE={max_share:g}: {top}")
            continue
        sample = "\n".join(
            f"    row {row}: {reason}: {raw}" for row, reason, raw in
            rej.select("row_number", "reason", "raw_row").head(samples).iter_rows()
        )
        over.append(f"{line}, above IE_MAX_REJECT_SHARE={max_share:g}; top reasons: {top}\n  sample rows:\n{sample}")
    if over:
        raise RejectRateError(
            "too many rejected rows; nothing was published (raise IE_MAX_REJECT_SHARE to accept them):\n"
            + "\n".join(over)
        )
    return warnings
