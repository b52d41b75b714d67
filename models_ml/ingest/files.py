"""A directory of plain files with the raw column names:

- ``interactions.csv`` or ``interactions.parquet``: user_id, item_id, event_ts, engagement;
- ``items.csv`` or ``items.parquet``: item_id, title, text.

Column types and accepted encodings are those of :mod:`models_ml.ingest.validate`
(integer event_ts in IE_TS_UNIT). Extra columns are ignored (but kept in ``raw_row`` of
rejected rows). CSV is read with every column as a string, so one bad value is a
rejected row, not a failed read; a line with the wrong number of fields refuses the
file, naming the line.
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
    if file.suffix != ".parquet":
        return v.read_csv_strings(file, required)
    try:
        df = pl.read_parquet(file)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise v.IngestError(f"{file}: cannot be read: {str(exc).splitlines()[0]}") from exc
    v.require_columns(df.columns, file, required)
    return df


def _validating(file: Path, fn, *args, **kwargs):
    """Run a validation step, naming the file if polars refuses a value it was given."""
    try:
        return fn(*args, **kwargs)
    except pl.exceptions.PolarsError as exc:
        raise v.IngestError(f"{file}: cannot be validated: {str(exc).splitlines()[0]}") from exc


def load(path: Path | None) -> v.IngestResult:
    if path is None:
        raise v.IngestError(f"the files source needs a directory (IE_SOURCE_PATH) holding {expected_files()}")
    path = Path(path)
    if not path.is_dir():
        raise v.IngestError(f"{path}: directory does not exist; expected it to hold {expected_files()}")
    inter_file, item_file = find_file(path, INTERACTIONS), find_file(path, ITEMS)
    interactions_raw = read_table(inter_file, INTERACTION_COLUMNS)
    items_raw = read_table(item_file, ITEM_COLUMNS)
    checked = _validating(
        item_file, v.validate_items, items_raw, item_file.name, item_id="item_id", title="title", text="text",
        raw_cols=items_raw.columns,
    )
    interactions, inter_rejected = _validating(
        inter_file, v.validate_interactions, interactions_raw, inter_file.name, user_id="user_id",
        item_id="item_id", event_ts="event_ts", engagement="engagement", raw_cols=interactions_raw.columns,
        known_items=checked.items["item_id"], rejected_items=checked.rejected_ids,
    )
    return v.finalize(
        "files", path, items=checked.items, interactions=interactions, rejected=[checked.rejected, inter_rejected],
        rows_read={inter_file.name: interactions_raw.height, item_file.name: items_raw.height}, notes=checked.notes,
    )
