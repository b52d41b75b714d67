"""Users' positive item sequences as the sequence recommender and the policies see
them: the catalog (item ids <-> model indices), ragged per-user sequences in CSR
form, and the vectorised helpers over them (padding, training windows, masking).

Sequences: a user's positive interactions in time order (ties broken by item id), each
item kept at its first positive occurrence, so a held-out item never also sits in the
history that is masked at evaluation time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from models_ml import config
from models_ml import warehouse as wh

PAD = 0  # item index 0 is padding; catalog items are 1..n


@dataclass(frozen=True)
class Catalog:
    """Item ids in catalog order; index i + 1 is the model's id for item_ids[i]."""

    item_ids: tuple[str, ...]

    @classmethod
    def from_items(cls, item_ids: Sequence[str]) -> Catalog:
        ids = sorted(set(item_ids))
        if len(ids) != len(item_ids):
            raise ValueError(f"catalog has {len(item_ids) - len(ids)} duplicate item ids")
        return cls(tuple(ids))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def index_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"item_id": list(self.item_ids), "item_idx": np.arange(1, self.n_items + 1, dtype=np.int64)},
            schema={"item_id": pl.String, "item_idx": pl.Int64},
        )

    def ids_of(self, idx: np.ndarray) -> list[str]:
        return [self.item_ids[i - 1] for i in idx]

    def digest(self) -> str:
        return hashlib.sha1("\n".join(self.item_ids).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class UserSequences:
    """Ragged per-user item-index sequences in CSR form (indptr[u]:indptr[u+1])."""

    user_ids: tuple[str, ...]
    indptr: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    def row(self, u: int) -> np.ndarray:
        return self.items[self.indptr[u] : self.indptr[u + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def position(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}

    def drop_last(self, n: int) -> UserSequences:
        """Every sequence without its last n items (shorter ones become empty)."""
        rows = [self.row(u)[: max(0, len(self.row(u)) - n)] for u in range(len(self))]
        return from_rows(self.user_ids, rows)

    def take(self, users: np.ndarray) -> UserSequences:
        return from_rows(tuple(self.user_ids[u] for u in users), [self.row(u) for u in users])


def from_rows(user_ids: Sequence[str], rows: Sequence[np.ndarray]) -> UserSequences:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    items = np.concatenate(rows).astype(np.int64) if rows and indptr[-1] else np.zeros(0, dtype=np.int64)
    return UserSequences(tuple(user_ids), indptr, items)


def sequences_from_frame(events: pl.DataFrame, catalog: Catalog, *, source: str, dedupe: bool = True) -> UserSequences:
    """(user_id, item_id, event_ts) rows -> per-user item sequences in time order.

    ``dedupe`` keeps each item at its first occurrence. Items missing from the catalog are
    an error naming ``source`` (never dropped silently).
    """
    if events.is_empty():
        return from_rows((), [])
    indexed = events.join(catalog.index_frame(), on="item_id", how="left")
    unknown = indexed.filter(pl.col("item_idx").is_null())
    if unknown.height:
        sample = unknown.select("user_id", "item_id").head(5).rows()
        raise ValueError(
            f"{source}: {unknown.height} rows reference item ids missing from the catalog (raw.items), "
            f"e.g. (user_id, item_id) {sample}"
        )
    indexed = indexed.sort(["user_id", "event_ts", "item_id"])
    if dedupe:
        indexed = indexed.unique(subset=["user_id", "item_idx"], keep="first", maintain_order=True)
    grouped = indexed.group_by("user_id", maintain_order=True).agg(pl.col("item_idx"))
    user_ids = tuple(grouped["user_id"].to_list())
    counts = grouped["item_idx"].list.len().to_numpy().astype(np.int64)
    indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    items = grouped["item_idx"].explode().to_numpy().astype(np.int64)
    return UserSequences(user_ids, indptr, items)


def load_training_data(con) -> tuple[UserSequences, Catalog]:
    """The catalog (raw.items) and every user's positive sequence (stg_interactions)."""
    catalog = Catalog.from_items(wh.read_table(con, config.RAW_ITEMS, ["item_id"])["item_id"].to_list())
    if not wh.table_exists(con, config.STG_INTERACTIONS):
        raise LookupError(f"{config.STG_INTERACTIONS} does not exist; build the dbt staging models first")
    positives = wh.query(con, f"select user_id, item_id, event_ts from {config.STG_INTERACTIONS} where is_positive")
    return sequences_from_frame(positives, catalog, source=config.STG_INTERACTIONS), catalog


def left_pad(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Right-align each row's last ``length`` items; zeros (PAD) in front."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        tail = r[-length:]
        if len(tail):
            out[i, length - len(tail) :] = tail
    return out


def training_windows(seqs: UserSequences, max_len: int) -> np.ndarray:
    """Cut every sequence into windows of max_len + 1 items from its end (consecutive
    windows share one item), so every transition is a training target exactly once."""
    rows: list[np.ndarray] = []
    for u in range(len(seqs)):
        s = seqs.row(u)
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            rows.append(s[start:end])
            end = start + 1
    return left_pad(rows, max_len + 1) if rows else np.zeros((0, max_len + 1), dtype=np.int64)


def row_items(seqs: UserSequences, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(i, item) pairs for every item of sequence ``rows[i]``, without a loop over rows."""
    rows = np.arange(len(seqs)) if rows is None else np.asarray(rows)
    starts = seqs.indptr[rows]
    lengths = seqs.indptr[rows + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
    return np.repeat(np.arange(len(rows)), lengths), seqs.items[offsets]


def mask_rows(scores: torch.Tensor, seqs: UserSequences, rows: np.ndarray | None = None) -> None:
    """Set scores[i, item] = -inf for every item in sequence ``rows[i]`` (in place)."""
    r, c = row_items(seqs, rows)
    if len(r):
        scores[torch.from_numpy(r), torch.from_numpy(c)] = float("-inf")
