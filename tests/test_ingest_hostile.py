"""Hostile but ordinary input to the files source (issue 13): nothing is misread or
guessed. Each case checks the kept values worked out by hand, the reason every
rejected row gets, and the row accounting (every data row is kept or rejected)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest

from models_ml import config
from models_ml.ingest import IngestError, load_source
from models_ml.ingest import validate as v

ITEMS = "item_id,title,text\n7,Seven,\"a, b\"\n8,Eight,\"c, d\"\n"
HEADER = "user_id,item_id,event_ts,engagement\n"


def write(tmp: Path, interactions: str, items: str = ITEMS) -> Path:
    (tmp / "items.csv").write_text(items)
    (tmp / "interactions.csv").write_text(HEADER + interactions)
    return tmp


def reasons(r, file: str = "interactions.csv") -> list[tuple[int, str]]:
    return r.rejected.filter(pl.col("source_file") == file).select("row_number", "reason").rows()


def accounted(r) -> None:
    for file, n in r.stats["rows_read"].items():
        kept = r.interactions.height if file.startswith("interactions") else r.items.height
        assert kept + r.rejected.filter(pl.col("source_file") == file).height == n, file


# ---- timestamps: one set of encodings, nothing guessed --------------------------------


def test_compact_dates_are_refused_not_read_as_seconds(tmp_path):
    r_dir = write(tmp_path, "u1,7,2023-01-28T10:00:00,4\nu1,8,2023-01-29T10:00:00,4\n")
    (tmp_path / "more").mkdir()
    bad = write(tmp_path / "more", "u1,7,20230128,4\nu1,8,20230129,4\nu2,7,1674900000,4\n")
    r = load_source("files", bad)
    # 20230128 as seconds would be 1970-08-23: refused with its own reason, never guessed
    assert reasons(r) == [(1, v.EVENT_TS_COMPACT_DATE), (2, v.EVENT_TS_COMPACT_DATE)]
    assert r.interactions.rows() == [("u2", "7", dt.datetime(2023, 1, 28, 10, 0), 4.0)]
    accounted(r)
    assert load_source("files", r_dir).rejected.height == 0


def test_compact_dates_in_an_integer_parquet_column(tmp_path):
    (tmp_path / "items.csv").write_text(ITEMS)
    pl.DataFrame({"user_id": ["u1", "u1"], "item_id": ["7", "8"], "event_ts": [20230128, 1674900000],
                  "engagement": [4.0, 5.0]}).write_parquet(tmp_path / "interactions.parquet")
    r = load_source("files", tmp_path)
    assert reasons(r, "interactions.parquet") == [(1, v.EVENT_TS_COMPACT_DATE)]
    assert r.interactions["event_ts"].to_list() == [dt.datetime(2023, 1, 28, 10, 0)]


@pytest.mark.parametrize("unit, value", [("s", "1674900000"), ("ms", "1674900000000"), ("us", "1674900000000000")])
def test_epoch_unit_is_declared(tmp_path, monkeypatch, unit, value):
    monkeypatch.setenv("IE_TS_UNIT", unit)
    r = load_source("files", write(tmp_path, f"u1,7,{value},4\n"))
    assert r.interactions["event_ts"].to_list() == [dt.datetime(2023, 1, 28, 10, 0)]


def test_milliseconds_under_the_default_unit_are_out_of_range(tmp_path):
    r = load_source("files", write(tmp_path, "u1,7,1674900000,4\nu1,8,1674900000000,4\n"))
    assert reasons(r) == [(2, v.EVENT_TS_OUT_OF_RANGE)]


def test_bad_unit_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("IE_TS_UNIT", "minutes")
    with pytest.raises(ValueError, match="IE_TS_UNIT must be one of s, ms, us, got 'minutes'"):
        load_source("files", write(tmp_path, "u1,7,1674900000,4\n"))


def test_plausible_range_is_configurable(tmp_path, monkeypatch):
    data = "u1,7,1985-06-01T00:00:00,4\nu1,8,2023-01-01T00:00:00,4\nu1,8,2099-01-01T00:00:00,4\n"
    r = load_source("files", write(tmp_path, data))
    assert reasons(r) == [(1, v.EVENT_TS_OUT_OF_RANGE), (3, v.EVENT_TS_OUT_OF_RANGE)]  # 1990 .. now + 1 day
    monkeypatch.setenv("IE_TS_MIN", "1980-01-01")
    monkeypatch.setenv("IE_TS_MAX", "2100-01-01T00:00:00Z")
    r = load_source("files", write(tmp_path, data))
    assert r.rejected.height == 0 and r.interactions.height == 3
    monkeypatch.setenv("IE_TS_MIN", "yesterday")
    with pytest.raises(ValueError, match="IE_TS_MIN='yesterday' is not an ISO-8601 date"):
        load_source("files", write(tmp_path, data))


def test_iso_forms_and_offsets_convert_to_utc(tmp_path):
    data = (
        "u1,7,2023-01-28T10:00:00,1\n"          # naive: taken as UTC
        "u1,7,2023-01-28 11:00:00.5,1\n"        # space, fraction
        "u1,7,2023-01-28T12:00:00Z,1\n"         # Z
        "u1,7,2023-01-28T15:30:00+02:00,1\n"    # offset -> 13:30 UTC
        "u1,7,2023-01-28t09:00-05:00,1\n"       # lower-case t, no seconds -> 14:00 UTC
        "u1,7,2023-01-29,1\n"                   # a date
    )
    r = load_source("files", write(tmp_path, data))
    assert r.interactions["event_ts"].to_list() == [
        dt.datetime(2023, 1, 28, 10), dt.datetime(2023, 1, 28, 11, 0, 0, 500_000), dt.datetime(2023, 1, 28, 12),
        dt.datetime(2023, 1, 28, 13, 30), dt.datetime(2023, 1, 28, 14), dt.datetime(2023, 1, 29)]


def test_time_zone_names_floats_and_other_shapes_are_refused(tmp_path):
    data = (
        "u1,7,2023-01-28T10:00:00,1\n"
        "u1,7,2023-01-28 10:00:00 Europe/Paris,1\n"   # 2 time-zone name
        "u1,7,2023-01-28T10:00:00 EST,1\n"            # 3 abbreviation
        "u1,7,2023-01-28T10:00:00[UTC],1\n"           # 4 bracketed name
        "u1,7,2023-01-28T10:00:00+0100,1\n"           # 5 offset without the colon: not the documented form
        "u1,7,01/28/2023,1\n"                         # 6 US date
        "u1,7,1674900000.5,1\n"                       # 7 a float
        "u1,7,28 Jan 2023,1\n"                        # 8 words
    )
    r = load_source("files", write(tmp_path, data))
    assert reasons(r) == [(2, v.EVENT_TS_TIME_ZONE_NAME), (3, v.EVENT_TS_TIME_ZONE_NAME),
                          (4, v.EVENT_TS_TIME_ZONE_NAME), (5, v.UNPARSABLE_EVENT_TS), (6, v.UNPARSABLE_EVENT_TS),
                          (7, v.UNPARSABLE_EVENT_TS), (8, v.UNPARSABLE_EVENT_TS)]
    accounted(r)


def test_mixed_encodings_keep_the_column_majority(tmp_path):
    data = "u1,7,2023-01-28T10:00:00,1\nu1,8,2023-01-28T11:00:00,1\nu2,7,1674900000,1\n"
    r = load_source("files", write(tmp_path, data))
    assert reasons(r) == [(3, v.EVENT_TS_MIXED)]
    data = "u1,7,1674900000,1\nu1,8,1674903600,1\nu2,7,2023-01-28T10:00:00,1\n"
    r = load_source("files", write(tmp_path, data))
    assert reasons(r) == [(3, v.EVENT_TS_MIXED)]
    assert r.interactions["event_ts"].to_list() == [dt.datetime(2023, 1, 28, 10), dt.datetime(2023, 1, 28, 11)]


def test_float_timestamp_column_refuses_the_file(tmp_path):
    (tmp_path / "items.csv").write_text(ITEMS)
    pl.DataFrame({"user_id": ["u1"], "item_id": ["7"], "event_ts": [1674900000.0], "engagement": [4.0]}).write_parquet(
        tmp_path / "interactions.parquet")
    with pytest.raises(IngestError, match=r"interactions\.parquet: column event_ts has type Float64 \(e\.g\. "
                                          r"1674900000\.0\); timestamp columns accept"):
        load_source("files", tmp_path)


# ---- ids: null-like tokens, number formatting, types ---------------------------------


@pytest.mark.parametrize("token", ["NULL", "None", "null", "nan", "N/A", "na", "nil", "-", "  "])
def test_null_like_tokens_are_null_ids(tmp_path, token):
    data = f"u1,7,2023-01-28T10:00:00,4\n{token},7,2023-01-28T11:00:00,4\nu2,{token},2023-01-28T12:00:00,4\n"
    items = ITEMS + f"{token},Ghost,ghost text\n"
    r = load_source("files", write(tmp_path, data, items))
    assert reasons(r) == [(2, v.NULL_USER_ID), (3, v.NULL_ITEM_ID)]
    assert reasons(r, "items.csv") == [(3, v.NULL_ITEM_ID)]
    assert r.interactions["user_id"].to_list() == ["u1"] and r.items["item_id"].to_list() == ["7", "8"]


def test_null_tokens_in_timestamps_and_engagement(tmp_path):
    r = load_source("files", write(tmp_path, "u1,7,NULL,4\nu1,8,2023-01-28T10:00:00,None\nu1,7,2023-01-28T11:00:00,3\n"))
    assert reasons(r) == [(1, v.NULL_EVENT_TS), (2, v.NULL_ENGAGEMENT)]


def test_whitespace_only_ids_are_null_as_the_gates_see_blanks(tmp_path):
    # \x1c is whitespace to Python (and the GE not_blank rule), not to Unicode trimming
    r = load_source("files", write(tmp_path, "u1,7,2023-01-28T10:00:00,4\n\x1c,7,2023-01-28T11:00:00,4\n"))
    assert reasons(r) == [(2, v.NULL_USER_ID)]


def test_ids_differing_only_in_number_formatting(tmp_path):
    data = "u1,7,2023-01-28T10:00:00,4\nu1,007,2023-01-28T11:00:00,4\nu1,7.0,2023-01-28T12:00:00,4\nu1,70,2023-01-28T13:00:00,4\n"
    r = load_source("files", write(tmp_path, data))
    assert reasons(r) == [(2, v.ITEM_ID_FORMAT), (3, v.ITEM_ID_FORMAT), (4, v.UNKNOWN_ITEM_ID)]


def test_float_id_column_is_a_type_error(tmp_path):
    # what pandas writes for an integer id column with a missing value
    pl.DataFrame({"item_id": [7.0, 8.0, None], "title": ["a", "b", "c"], "text": ["x", "y", "z"]}).write_parquet(
        tmp_path / "items.parquet")
    (tmp_path / "interactions.csv").write_text(HEADER + "u1,7,2023-01-28T10:00:00,4\n")
    with pytest.raises(IngestError, match=r"items\.parquet: column item_id has type Float64 \(e\.g\. 7\.0\); "
                                          r"id columns accept strings or integers \(an integer id column with "
                                          r"missing values becomes float"):
        load_source("files", tmp_path)


def test_list_typed_id_column_names_the_file(tmp_path):
    (tmp_path / "items.csv").write_text(ITEMS)
    pl.DataFrame({"user_id": [["u1", "u2"]], "item_id": ["7"], "event_ts": ["2023-01-28T10:00:00"],
                  "engagement": [4.0]}).write_parquet(tmp_path / "interactions.parquet")
    with pytest.raises(IngestError, match=r"interactions\.parquet: column user_id has type List\(String\) "
                                          r"\(e\.g\. \['u1', 'u2'\]\); id columns accept strings or integers"):
        load_source("files", tmp_path)


def test_integer_ids_keep_their_digits(tmp_path):
    pl.DataFrame({"item_id": [7, 8], "title": ["a", "b"], "text": ["x", "y"]}).write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"user_id": [1], "item_id": [7], "event_ts": [dt.datetime(2023, 1, 28)], "engagement": [4]}).write_parquet(
        tmp_path / "interactions.parquet")
    r = load_source("files", tmp_path)
    assert r.interactions.rows() == [("1", "7", dt.datetime(2023, 1, 28), 4.0)]


# ---- rows that the raw tables' gates would reject are quarantined here ------------------


def test_events_of_rejected_items_say_why(tmp_path):
    items = ITEMS + "9,,\n"
    r = load_source("files", write(tmp_path, "u1,7,2023-01-28T10:00:00,4\nu1,9,2023-01-28T11:00:00,4\n", items))
    assert reasons(r, "items.csv") == [(3, v.ITEM_WITHOUT_TEXT)]
    assert reasons(r) == [(2, f"{v.REJECTED_ITEM}: {v.ITEM_WITHOUT_TEXT}")]


def test_an_id_kept_by_a_later_row_is_not_a_rejected_item(tmp_path):
    items = "item_id,title,text\n7,,\n7,Seven,text\n"
    r = load_source("files", write(tmp_path, "u1,7,2023-01-28T10:00:00,4\n", items))
    assert r.interactions.height == 1 and reasons(r, "items.csv") == [(1, v.ITEM_WITHOUT_TEXT)]


def test_negative_engagement_is_quarantined(tmp_path):
    r = load_source("files", write(tmp_path, "u1,7,2023-01-28T10:00:00,-1\nu1,8,2023-01-28T10:00:00,0\n"))
    assert reasons(r) == [(1, v.NEGATIVE_ENGAGEMENT)]
    assert r.interactions["engagement"].to_list() == [0.0]


def test_kept_rows_pass_the_raw_suites(tmp_path):
    """Everything the raw gates reject is set aside by ingestion first."""
    from expectations import validate_table
    from models_ml import warehouse as wh

    data = ("u1,7,2023-01-28T10:00:00,-1\n\x1c,7,2023-01-28T10:00:00,1\nu1,7,2023-01-28T10:00:00,1\n"
            "u1,7,2023-01-28T10:00:00Z,2\nu1,9,2023-01-28T10:00:00,1\nu2,8,2023-01-28T10:00:00,inf\n"
            "u2,8,2023-01-28T11:00:00,3\n")
    r = load_source("files", write(tmp_path, data, ITEMS + "9,,\n\u3000,x,y\n"))
    db = tmp_path / "wh.duckdb"
    with wh.connect(db) as con:
        wh.write_tables(con, {config.RAW_ITEMS: r.items, config.RAW_INTERACTIONS: r.interactions})
        for table in (config.RAW_ITEMS, config.RAW_INTERACTIONS):
            assert validate_table(con, table).success, table
    assert r.interactions.height == 2
    accounted(r)


def test_unicode_long_and_sql_like_text_is_stored_verbatim(tmp_path):
    long = "ü" * 100_000
    items = f"item_id,title,text\n7,Ça va,\"{long}\"\n8,x,\"'; drop table raw.items; --\"\n"
    r = load_source("files", write(tmp_path, "u1,7,2023-01-28T10:00:00,4\n", items))
    assert r.items["text"].to_list() == [long, "'; drop table raw.items; --"]


# ---- CSV structure -------------------------------------------------------------------


@pytest.mark.parametrize("line, fields", [("u1,7,2023-01-28T10:00:00,4,extra", 5), ("u1,7,2023-01-28T10:00:00", 3)])
def test_ragged_line_refuses_the_file_naming_the_line(tmp_path, line, fields):
    data = "u1,7,2023-01-28T10:00:00,4\n\"u2\nsplit\",8,2023-01-28T10:00:00,4\n" + line + "\n"
    with pytest.raises(IngestError, match=rf"interactions\.csv: line 5 has {fields} field\(s\) where the header has 4"):
        load_source("files", write(tmp_path, data))


def test_blank_lines_are_empty_rows_not_ragged(tmp_path):
    r = load_source("files", write(tmp_path, "u1,7,2023-01-28T10:00:00,4\n\nu1,8,2023-01-28T10:00:00,\n"))
    assert reasons(r) == [(2, v.EMPTY_ROW), (3, v.NULL_ENGAGEMENT)]


# ---- the reject-rate gate --------------------------------------------------------------


def mostly_bad(tmp: Path, bad: int, good: int) -> Path:
    rows = [f"u{i},7,2023-01-28T10:00:00 CET,4" for i in range(bad)]
    rows += [f"g{i},8,2023-01-28T10:00:00,4" for i in range(good)]
    return write(tmp, "\n".join(rows) + "\n")


def test_gate_stops_above_the_share_with_reasons_and_samples(tmp_path):
    r = load_source("files", mostly_bad(tmp_path, 3, 7))
    with pytest.raises(v.RejectRateError) as exc:
        v.check_reject_shares(r)
    text = str(exc.value)
    assert "nothing was published" in text
    assert "interactions.csv: 3 of 10 rows rejected (30.0%), above IE_MAX_REJECT_SHARE=0.05" in text
    assert f"top reasons: {v.EVENT_TS_TIME_ZONE_NAME} 3" in text
    assert 'row 1: ' in text and '"user_id":"u0"' in text and "row 3: " in text and "row 4" not in text


def test_gate_warns_below_the_share_and_is_configurable(tmp_path, monkeypatch):
    r = load_source("files", mostly_bad(tmp_path, 1, 24))
    assert v.check_reject_shares(r) == [
        f"interactions.csv: 1 of 25 rows rejected (4.0%), within IE_MAX_REJECT_SHARE=0.05: {v.EVENT_TS_TIME_ZONE_NAME} 1"]
    r = load_source("files", mostly_bad(tmp_path, 3, 7))
    monkeypatch.setenv("IE_MAX_REJECT_SHARE", "0.3")
    assert len(v.check_reject_shares(r)) == 1  # exactly at the share passes
    monkeypatch.setenv("IE_MAX_REJECT_SHARE", "2")
    with pytest.raises(ValueError, match=r"IE_MAX_REJECT_SHARE must be a number in 0.0..1.0, got '2'"):
        v.check_reject_shares(r)
    assert r.stats["reject_share_by_file"] == {"interactions.csv": 0.3, "items.csv": 0.0}


@pytest.mark.parametrize("bad_row, reason", [
    ("u{i},7,01/28/2023 10:00,4", v.UNPARSABLE_EVENT_TS),           # mixed formats: half US dates
    ("u{i},7,2023-01-28T10:00:00 America/New_York,4", v.EVENT_TS_TIME_ZONE_NAME),
    ("u{i},007,2023-01-28T10:00:00,4", v.ITEM_ID_FORMAT),           # ids 007 vs 7
])
def test_a_third_or_half_quarantined_stops_the_run(tmp_path, bad_row, reason):
    rows = [bad_row.format(i=i) for i in range(5)] + [f"g{i},8,2023-01-28T10:00:00,4" for i in range(5)]
    r = load_source("files", write(tmp_path, "\n".join(rows) + "\n"))
    assert r.stats["rejected"] == {reason: 5}
    with pytest.raises(v.RejectRateError, match=rf"5 of 10 rows rejected \(50\.0%\).*top reasons: {re.escape(reason)} 5"):
        v.check_reject_shares(r)
