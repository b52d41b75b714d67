"""A small, hand-built warehouse that satisfies every table contract, for the
expectation-suite tests. Tables are written through models_ml.warehouse, as the
pipeline writes them.

World (K = 2, LLM level 2, positive threshold 4.0):
  items i1..i8; level-1 clusters 0 'drama' (i1-i4) and 1 'comedy' (i5-i8);
  level-2 clusters 0 (i1,i2) 1 (i3,i4) under 0, and 2 (i5,i6) 3 (i7,i8) under 1.
  positives: u1 -> i1, i3; u2 -> i2, i6; u3 -> i8 (u1 rated i5 2.0: consumed, not positive).
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import polars as pl

from expectations.suites import Params
from models_ml import config
from models_ml import warehouse as wh

PARAMS = Params(
    history_len=2, llm_level=2, positive_threshold=4.0, max_per_label=2, max_per_history=2, top_m=2, slate_size=2, levels=(1, 2)
)

T0 = dt.datetime(2024, 1, 1)


def ts(hours: int) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


FINE = {"i1": 0, "i2": 0, "i3": 1, "i4": 1, "i5": 2, "i6": 2, "i7": 3, "i8": 3}
PARENT = {0: 0, 1: 0, 2: 1, 3: 1}

INTERACTIONS = [
    ("u1", "i1", 1, 5.0),
    ("u1", "i3", 2, 4.0),
    ("u1", "i5", 3, 2.0),
    ("u2", "i2", 1, 4.5),
    ("u2", "i6", 2, 5.0),
    ("u2", "i7", 3, 1.0),
    ("u3", "i8", 1, 4.0),
    ("u3", "i4", 2, 3.0),
]

# (policy, user, rank, item, score, target)
RECOMMENDATIONS = [
    ("explore", "u1", 1, "i5", 0.9, 2),  # i5 consumed by u1 but not positively: allowed
    ("explore", "u1", 2, "i6", 0.8, 2),
    ("baseline", "u1", 1, "i2", 0.9, None),
    ("baseline", "u1", 2, "i4", 0.5, None),
    ("popular", "u1", 1, "i6", 10.0, None),
    ("popular", "u1", 2, "i8", 8.0, None),
    ("explore", "u2", 1, "i3", 0.6, 1),
    ("explore", "u2", 2, "i4", 0.4, 1),
    ("baseline", "u2", 1, "i1", 0.9, None),
    ("baseline", "u2", 2, "i5", 0.7, None),
    ("popular", "u2", 1, "i8", 10.0, None),
    ("popular", "u2", 2, "i1", 9.0, None),
    ("explore", "u3", 1, "i1", 0.5, 0),
    ("explore", "u3", 2, "i2", 0.5, 0),  # ties are fine: score is non-increasing
    ("baseline", "u3", 1, "i3", 0.8, None),
    ("baseline", "u3", 2, "i7", 0.1, None),
    ("popular", "u3", 1, "i6", 10.0, None),
    ("popular", "u3", 2, "i1", 9.0, None),
]


def frames() -> dict[str, pl.DataFrame]:
    items = pl.DataFrame(
        {
            "item_id": list(FINE),
            "title": [f"Item {i[1:]}" for i in FINE],
            "text": [f"genres: {'drama' if PARENT[c] == 0 else 'comedy'} #{c}" for c in FINE.values()],
        }
    )
    interactions = pl.DataFrame(
        {
            "user_id": [r[0] for r in INTERACTIONS],
            "item_id": [r[1] for r in INTERACTIONS],
            "event_ts": [ts(r[2]) for r in INTERACTIONS],
            "engagement": [r[3] for r in INTERACTIONS],
        }
    )
    clusters = pl.DataFrame(
        {
            "level": [1, 1, 2, 2, 2, 2],
            "cluster_id": [0, 1, 0, 1, 2, 3],
            "parent_cluster_id": [None, None, 0, 0, 1, 1],
            "description": ["drama", "comedy", "drama romance", "drama war", "comedy family", "comedy dark"],
            "n_items": [4, 4, 2, 2, 2, 2],
        },
        schema={
            "level": pl.Int32,
            "cluster_id": pl.Int32,
            "parent_cluster_id": pl.Int32,
            "description": pl.Utf8,
            "n_items": pl.Int64,
        },
    )
    item_clusters = pl.DataFrame(
        {
            "item_id": list(FINE) * 2,
            "level": [1] * 8 + [2] * 8,
            "cluster_id": [PARENT[c] for c in FINE.values()] + list(FINE.values()),
        },
        schema={"item_id": pl.Utf8, "level": pl.Int32, "cluster_id": pl.Int32},
    )
    training_pairs = pl.DataFrame(
        {
            "level": [2, 2, 2, 2],
            "k": [2, 2, 2, 2],
            "history": [[0, 1], [1, 2], [0, 2], [2, 3]],
            "next_cluster_id": [2, 3, 3, 0],
            "split": ["train", "train", "eval", "eval"],
            "user_id": ["u1", "u1", "u2", "u2"],
            "event_ts": [ts(2), ts(3), ts(2), ts(3)],
        },
        schema={
            "level": pl.Int32,
            "k": pl.Int32,
            "history": pl.List(pl.Int32),
            "next_cluster_id": pl.Int32,
            "split": pl.Utf8,
            "user_id": pl.Utf8,
            "event_ts": pl.Datetime("us"),
        },
    )
    nit_rows = []
    for h in itertools.permutations(range(4), 2):  # all 12 ordered histories
        rest = [c for c in range(4) if c not in h]
        for rank, (nxt, score) in enumerate(zip(rest, (0.7, 0.3)), start=1):
            nit_rows.append((2, 2, list(h), rank, nxt, score, "v1"))
    nit = pl.DataFrame(
        nit_rows,
        schema={
            "level": pl.Int32,
            "k": pl.Int32,
            "history": pl.List(pl.Int32),
            "rank": pl.Int32,
            "next_cluster_id": pl.Int32,
            "score": pl.Float64,
            "model_version": pl.Utf8,
        },
        orient="row",
    )
    # the comparison lookups: the same rows under two policies
    policy_lookups = pl.concat([nit.select(pl.lit(p).alias("policy"), pl.all()) for p in ("zero_shot", "markov_smoothed")])
    recs = pl.DataFrame(
        [(p, u, r, i, FINE[i], s, t) for p, u, r, i, s, t in RECOMMENDATIONS],
        schema={
            "policy": pl.Utf8,
            "user_id": pl.Utf8,
            "rank": pl.Int32,
            "item_id": pl.Utf8,
            "cluster_id": pl.Int32,
            "score": pl.Float64,
            "target_cluster_id": pl.Int32,
        },
        orient="row",
    )
    return {
        config.RAW_ITEMS: items,
        config.RAW_INTERACTIONS: interactions,
        config.CLUSTERS: clusters,
        config.ITEM_CLUSTERS: item_clusters,
        config.TRAINING_PAIRS: training_pairs,
        config.NOVEL_INTEREST_TRANSITIONS: nit,
        config.POLICY_LOOKUPS: policy_lookups,
        config.RECOMMENDATIONS: recs,
    }


def build_warehouse(path: Path, with_stg: bool = True) -> Path:
    """Write the good world to ``path``; ``with_stg`` adds the dbt staging view that
    carries is_positive (same definition as dbt's stg_interactions)."""
    with wh.connect(path) as con:
        wh.write_tables(con, frames())
        if with_stg:
            con.execute(
                f"create or replace view {config.STG_INTERACTIONS} as "
                f"select *, engagement >= {PARAMS.positive_threshold} as is_positive from {config.RAW_INTERACTIONS}"
            )
    return path
