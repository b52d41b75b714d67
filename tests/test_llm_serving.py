"""Online serving: next_interests(user_id) on a hand-built warehouse.

Clusters (level 2): 0 jazz, 1 bread, 2 chess, 3 running, 4 birds.
Users: uA visits 0, 1, 0, 2 -> last two distinct clusters [0, 2] (0's last visit is at
position 3, 2's at 4); uB has only cluster 3; uC only cluster 1; uD has interactions
but no positive one (no cluster sequence); uE's history [1, 4] is missing from the lookup.
Novel transitions (train) reach 4 three times, 0 and 2 twice, 1 once, 3 never.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from models_ml import config
from models_ml import warehouse as wh
from models_ml.llm.pairs import LOOKUP_SCHEMA
from models_ml.lookup import UnknownUserError, next_interests

DESC = {0: "jazz", 1: "bread", 2: "chess", 3: "running", 4: "birds"}


@pytest.fixture()
def db(tmp_path) -> Path:
    path = tmp_path / "wh.duckdb"
    clusters = pl.DataFrame({"level": 2, "cluster_id": list(DESC), "parent_cluster_id": 0,
                             "description": list(DESC.values()), "n_items": 3})
    seqs = pl.DataFrame(
        [("uA", 1, 0), ("uA", 2, 1), ("uA", 3, 0), ("uA", 4, 2), ("uB", 1, 3), ("uC", 1, 1), ("uE", 1, 1), ("uE", 2, 4)],
        schema=["user_id", "seq_pos", "cluster_id"], orient="row",
    ).with_columns(level=pl.lit(2))
    events = pl.DataFrame({"user_id": ["uA", "uB", "uC", "uD", "uE"], "item_id": "i1"})
    transitions = pl.DataFrame(
        {"level": 2, "k": 2, "history": [[0, 1]] * 8, "next_cluster_id": [4, 4, 4, 0, 0, 2, 2, 1],
         "split": "train"}
    ).vstack(pl.DataFrame({"level": 2, "k": 2, "history": [[0, 1]], "next_cluster_id": [3], "split": "eval"}))
    lookup = pl.DataFrame(
        [(2, 2, [0, 2], 1, 3, 0.5, "v1", 0), (2, 2, [0, 2], 2, 4, 0.3, "v1", 0), (2, 2, [0, 2], 3, 1, 0.1, "v1", 0),
         (2, 1, [3], 1, 4, 0.6, "v1", 0), (2, 1, [3], 2, 0, 0.2, "v1", 0)],
        schema=LOOKUP_SCHEMA, orient="row",
    )
    item_clusters = pl.DataFrame({"item_id": [f"i{c}" for c in DESC], "level": 2, "cluster_id": list(DESC)})
    with wh.connect(path) as con:
        wh.write_tables(con, {config.CLUSTERS: clusters, config.ITEM_CLUSTERS: item_clusters,
                              config.USER_CLUSTER_SEQUENCES: seqs,
                              config.STG_INTERACTIONS: events, config.NOVEL_TRANSITION_EXAMPLES: transitions,
                              config.NOVEL_INTEREST_TRANSITIONS: lookup})
    return path


def served(db, user, **kw) -> pl.DataFrame:
    with wh.connect(db, read_only=True) as con:
        return next_interests(user, con, level=2, history_len=2, m=kw.pop("m", 3))


def test_full_history_uses_the_lookup(db):
    out = served(db, "uA")
    assert out["cluster_id"].to_list() == [3, 4, 1]
    assert out["description"].to_list() == ["running", "birds", "bread"]
    assert out["score"].to_list() == [0.5, 0.3, 0.1]
    assert out["history"][0].to_list() == [0, 2]
    assert set(out["source"]) == {"lookup"} and set(out["model_version"]) == {"v1"}
    assert served(db, "uA", m=2)["rank"].to_list() == [1, 2]


def test_short_history_uses_the_k1_lookup_when_there_is_one(db):
    out = served(db, "uB")
    assert out["cluster_id"].to_list() == [4, 0] and set(out["source"]) == {"lookup_k1"}
    assert out["history"][0].to_list() == [3]


def test_short_history_without_k1_rows_falls_back_to_popularity(db):
    out = served(db, "uC")  # consumed cluster 1 is excluded; 4 (3), 0 (2), 2 (2), 3 (0): total 7
    assert out["cluster_id"].to_list() == [4, 0, 2]
    assert out["score"].to_list() == pytest.approx([3 / 7, 2 / 7, 2 / 7])
    assert set(out["source"]) == {"popularity"} and out["model_version"].null_count() == 3


def test_no_positive_history_gets_plain_popularity(db):
    out = served(db, "uD")  # nothing consumed: 4 (3), 0 (2), 2 (2), 1 (1), 3 (0): total 8
    assert out["cluster_id"].to_list() == [4, 0, 2]
    assert out["score"].to_list() == pytest.approx([3 / 8, 2 / 8, 2 / 8])
    assert out["history"][0].to_list() == []


def test_errors(db, monkeypatch):
    with pytest.raises(UnknownUserError, match="'nobody' has no interactions"):
        served(db, "nobody")
    with pytest.raises(LookupError, match=r"history \[1, 4\] .* stale"):
        served(db, "uE")
    with wh.connect(db) as con:
        con.execute(f"drop table {config.NOVEL_INTEREST_TRANSITIONS}")
    with pytest.raises(LookupError, match="does not exist: materialize the llm asset group"):
        served(db, "uA")


def test_default_connection_and_settings(db, monkeypatch):
    monkeypatch.setenv("DUCKDB_DATABASE", str(db))
    monkeypatch.setenv("IE_K", "2")
    monkeypatch.setenv("IE_LEVEL", "2")
    monkeypatch.setenv("IE_LLM_TOP_M", "1")
    out = next_interests("uA")
    assert out.select("rank", "cluster_id").rows() == [(1, 3)]
