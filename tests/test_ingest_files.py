"""The files source (CSV and Parquet) and every bad-input rule of the shared validation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from models_ml.ingest import IngestError, load_source
from models_ml.ingest import validate as v

ITEMS_CSV = (
    "item_id,title,text\n"
    'i1,Sourdough Basics,"starter, levain and crumb"\n'   # row 1
    "i2,Jazz Guitar,\n"                                    # row 2: text falls back to the title
    'i3,,"only text, no title"\n'                          # row 3: title falls back to the text
    "i4,,\n"                                               # row 4: item without text
    "i1,Another,dup\n"                                     # row 5: duplicate item_id
    ",Nameless,some text\n"                                # row 6: null item_id
)
INTERACTIONS_CSV = (
    "user_id,item_id,event_ts,engagement\n"
    "u1,i1,2024-01-01T10:00:00,4.5\n"          # 1 ok
    "u1,i2,2024-01-01 11:00:00.250,3\n"        # 2 ok, fractional seconds
    "u1,i1,2024-01-01T10:00:00,2.0\n"          # 3 duplicate event of row 1
    ",i1,2024-01-02T00:00:00,4\n"              # 4 null user_id
    "u2,,2024-01-02T00:00:00,4\n"              # 5 null item_id
    "u2,i1,yesterday,4\n"                      # 6 unparsable event_ts
    "u2,i1,,4\n"                               # 7 null event_ts
    "u2,i1,2024-01-03T00:00:00,great\n"        # 8 non-numeric engagement
    "u2,i1,2024-01-03T00:00:00,\n"             # 9 null engagement
    "u2,i9,2024-01-04T00:00:00,5\n"            # 10 unknown item_id
    "u2,i3,2024-01-04 00:00,5\n"               # 11 ok, no seconds
    "u2,i4,2024-01-05T00:00:00Z,4\n"           # 12 its item was rejected for having no text
    "u3,i2,2024-01-05T02:00:00+02:00, 1 \n"    # 13 ok, offset converted to UTC, padded number
    "u3,i1,1704326400,3\n"                     # 14 a unix time among ISO strings: mixed encodings
    ",,,\n"                                    # 15 empty row
    "u3,i3,2024-02-30,2\n"                     # 16 no such date
)


def reasons(r) -> list[tuple[str, int, str]]:
    return r.rejected.select("source_file", "row_number", "reason").rows()


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    (tmp_path / "items.csv").write_text(ITEMS_CSV)
    (tmp_path / "interactions.csv").write_text(INTERACTIONS_CSV)
    return tmp_path


def test_csv_values_and_every_rejection(csv_dir):
    r = load_source("files", csv_dir)
    assert r.interactions.rows() == [
        ("u1", "i1", dt.datetime(2024, 1, 1, 10), 4.5),
        ("u1", "i2", dt.datetime(2024, 1, 1, 11, 0, 0, 250_000), 3.0),
        ("u2", "i3", dt.datetime(2024, 1, 4), 5.0),
        ("u3", "i2", dt.datetime(2024, 1, 5), 1.0),
    ]
    assert r.items.rows() == [
        ("i1", "Sourdough Basics", "starter, levain and crumb"),
        ("i2", "Jazz Guitar", "Jazz Guitar"),
        ("i3", "only text, no title", "only text, no title"),
    ]
    assert (r.stats["items_text_from_title"], r.stats["items_title_from_text"]) == (1, 1)
    assert reasons(r) == [
        ("interactions.csv", 3, v.DUPLICATE_EVENT),
        ("interactions.csv", 4, v.NULL_USER_ID),
        ("interactions.csv", 5, v.NULL_ITEM_ID),
        ("interactions.csv", 6, v.UNPARSABLE_EVENT_TS),
        ("interactions.csv", 7, v.NULL_EVENT_TS),
        ("interactions.csv", 8, v.NON_NUMERIC_ENGAGEMENT),
        ("interactions.csv", 9, v.NULL_ENGAGEMENT),
        ("interactions.csv", 10, v.UNKNOWN_ITEM_ID),
        ("interactions.csv", 12, f"{v.REJECTED_ITEM}: {v.ITEM_WITHOUT_TEXT}"),
        ("interactions.csv", 14, v.EVENT_TS_MIXED),
        ("interactions.csv", 15, v.EMPTY_ROW),
        ("interactions.csv", 16, v.UNPARSABLE_EVENT_TS),
        ("items.csv", 4, v.ITEM_WITHOUT_TEXT),
        ("items.csv", 5, v.DUPLICATE_ITEM_ID),
        ("items.csv", 6, v.NULL_ITEM_ID),
    ]
    assert r.stats["rejected"] == {
        v.NULL_ITEM_ID: 2, v.UNPARSABLE_EVENT_TS: 2, v.DUPLICATE_EVENT: 1, v.UNKNOWN_ITEM_ID: 1,
        f"{v.REJECTED_ITEM}: {v.ITEM_WITHOUT_TEXT}": 1,
        v.DUPLICATE_ITEM_ID: 1, v.EMPTY_ROW: 1, v.EVENT_TS_MIXED: 1, v.ITEM_WITHOUT_TEXT: 1,
        v.NON_NUMERIC_ENGAGEMENT: 1, v.NULL_ENGAGEMENT: 1, v.NULL_EVENT_TS: 1, v.NULL_USER_ID: 1,
    }
    assert r.stats["rejected_total"] == r.rejected.height == 15
    assert r.stats["rows_read"] == {"interactions.csv": 16, "items.csv": 6}
    # nothing is lost: every data row is kept or rejected
    assert r.interactions.height + sum(r.stats["rejected_by_file"]["interactions.csv"].values()) == 16
    assert r.items.height + sum(r.stats["rejected_by_file"]["items.csv"].values()) == 6
    assert json.loads(r.rejected.row(0, named=True)["raw_row"]) == {
        "user_id": "u1", "item_id": "i1", "event_ts": "2024-01-01T10:00:00", "engagement": "2.0"}
    assert r.rejected.schema == pl.Schema(v.REJECTED_SCHEMA)


def test_parquet_with_typed_columns(tmp_path):
    pl.DataFrame({"item_id": [10, 20], "title": ["Ten", "Twenty"], "text": ["ten text", None]}).write_parquet(
        tmp_path / "items.parquet")
    utc2 = dt.timezone(dt.timedelta(hours=2))
    pl.DataFrame({
        "user_id": [1, 1, 2, 2],
        "item_id": [10, 20, 10, 10],
        "event_ts": [dt.datetime(2024, 3, 1, 12, tzinfo=utc2), dt.datetime(2024, 3, 2, tzinfo=utc2),
                     dt.datetime(2024, 3, 1, 12, tzinfo=utc2), dt.datetime(2024, 3, 1, 12, tzinfo=utc2)],
        "engagement": [0.5, float("nan"), 1.0, 0.25],
        "device": ["tv", "phone", "tv", "tv"],  # extra columns are ignored but kept in raw_row
    }).write_parquet(tmp_path / "interactions.parquet")
    r = load_source("files", tmp_path)
    assert r.interactions.rows() == [("1", "10", dt.datetime(2024, 3, 1, 10), 0.5),
                                     ("2", "10", dt.datetime(2024, 3, 1, 10), 1.0)]
    assert r.items.rows() == [("10", "Ten", "ten text"), ("20", "Twenty", "Twenty")]
    assert reasons(r) == [("interactions.parquet", 2, v.NON_NUMERIC_ENGAGEMENT),
                          ("interactions.parquet", 4, v.DUPLICATE_EVENT)]
    assert json.loads(r.rejected["raw_row"][1])["device"] == "tv"
    assert r.stats["rows_read"] == {"interactions.parquet": 4, "items.parquet": 2}


def test_csv_and_parquet_mix(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,text\n1,One,first\n")
    pl.DataFrame({"user_id": ["a"], "item_id": ["1"], "event_ts": ["2024-05-01"], "engagement": [3.0]}).write_parquet(
        tmp_path / "interactions.parquet")
    r = load_source("files", tmp_path)
    assert r.interactions.rows() == [("a", "1", dt.datetime(2024, 5, 1), 3.0)]


def test_missing_directory_files_and_columns(tmp_path):
    with pytest.raises(IngestError, match="needs a directory"):
        load_source("files", None)
    with pytest.raises(IngestError, match=r"nope: directory does not exist; expected it to hold interactions\.csv\|interactions\.parquet and items\.csv\|items\.parquet"):
        load_source("files", tmp_path / "nope")
    (tmp_path / "interactions.csv").write_text("user_id,item_id,event_ts,engagement\n")
    with pytest.raises(IngestError, match=rf"{tmp_path}: no items file \(files present: interactions\.csv\)"):
        load_source("files", tmp_path)
    (tmp_path / "items.csv").write_text("item_id,text\n1,x\n")
    with pytest.raises(IngestError, match=r"items\.csv: missing column\(s\) title"):
        load_source("files", tmp_path)
    (tmp_path / "items.csv").write_text("item_id,title,text\n1,x,y\n")
    (tmp_path / "interactions.csv").write_text("user,item_id,event_ts\n")
    with pytest.raises(IngestError, match=r"interactions\.csv: missing column\(s\) user_id, engagement"):
        load_source("files", tmp_path)
    pl.DataFrame({"item_id": ["1"], "title": ["x"], "text": ["y"]}).write_parquet(tmp_path / "items.parquet")
    with pytest.raises(IngestError, match=r"both items\.csv and items\.parquet exist"):
        load_source("files", tmp_path)


def test_unreadable_csv_names_the_file(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,text\n1,x,y\n")
    (tmp_path / "interactions.csv").write_text("user_id,item_id,event_ts,engagement\nu,1,2024-01-01,4,extra,fields\n")
    with pytest.raises(IngestError, match=r"interactions\.csv: line 2 has 6 field\(s\) where the header has 4"):
        load_source("files", tmp_path)


def test_no_valid_interactions_is_an_error(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,text\n1,x,y\n")
    (tmp_path / "interactions.csv").write_text("user_id,item_id,event_ts,engagement\nu,1,soon,4\nu,2,2024-01-01,4\n")
    with pytest.raises(IngestError, match=r"files source at .*: no valid interactions remain after validation .*"
                                          r"'unknown item_id': 1, 'unparsable event_ts': 1"):
        load_source("files", tmp_path)


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown source 'kafka'; expected one of demo, movielens, files"):
        load_source("kafka", None)
