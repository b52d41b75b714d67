"""A directory of plain files with the raw column names:

- ``interactions.csv`` or ``interactions.parquet``: user_id, item_id, event_ts, engagement
  (event_ts as ISO 8601 strings, unix seconds or a timestamp column);
- ``items.csv`` or ``items.parquet``: item_id, title, text.

Extra columns are ignored (but kept in ``raw_row`` of rejected rows). CSV is read
with every column as a string, so one bad value is a rejected row, not a failed read.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from models_ml.ingest import validate as v

INTERACTIONS = "interactions"
ITEMS = "items"
EXTENSIONS = (".csv", ".parquet")
INTERACTION_COLUMNS = ("user_id", "item_id", "event_ts", "engagement")
ITEM_COLUMNS = ("item_id", "title", "text")


def expected_files() -> str:
    return " and ".join("|".join(f"{stem}{ext}" for ext in EXTENSIONS) for stem in (INTERACTIONS, ITEMS))


def find_file(path: Path, stem: str) -> Path:
    found = [path / f"{stem}{ext}" for ext in EXTENSIONS if (path / f"{stem}{ext}").is_file()]
    if not found:
        present = ", ".join(sorted(p.name for p in path.iterdir())) or "none"
        raise v.IngestError(f"{path}: no {stem} file (files present: {present}); expected {expected_files()}")
    if len(found) > 1:
        raise v.IngestError(f"{path}: both {found[0].name} and {found[1].name} exist; keep one of them")
    return found[0]


def read_table(file: Path, required: tuple[str, ...]) -> pl.DataFrame:
    try:
        if file.suffix == ".parquet":
            df = pl.read_parquet(file)
        else:
            df = pl.read_csv(file, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise v.IngestError(f"{file}: cannot be read: {exc}") from exc
    v.require_columns(df.columns, file, required)
    return df


def load(path: Path | None) -> v.IngestResult:
    if path is None:
        raise v.IngestError(f"the files source needs a directory (IE_SOURCE_PATH) holding {expected_files()}")
    path = Path(path)
    if not path.is_dir():
        raise v.IngestError(f"{path}: directory does not exist; expected it to hold {expected_files()}")
    inter_file, item_file = find_file(path, INTERACTIONS), find_file(path, ITEMS)
    interactions_raw = read_table(inter_file, INTERACTION_COLUMNS)
    items_raw = read_table(item_file, ITEM_COLUMNS)
    items, item_rejected, notes = v.validate_items(
        items_raw, item_file.name, item_id="item_id", title="title", text="text", raw_cols=items_raw.columns
    )
    interactions, inter_rejected = v.validate_interactions(
        interactions_raw, inter_file.name, user_id="user_id", item_id="item_id", event_ts="event_ts",
        engagement="engagement", raw_cols=interactions_raw.columns, known_items=items["item_id"],
    )
    return v.finalize(
        "files", path, items=items, interactions=interactions, rejected=[item_rejected, inter_rejected],
        rows_read={inter_file.name: interactions_raw.height, item_file.name: items_raw.height}, notes=notes,
    )
