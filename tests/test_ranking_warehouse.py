"""Policies for every user on the hand-made warehouse of ranking_fixtures (real dbt
staging models, a real small SASRec), the online API, the CLI, bad input, and the
exploration_metrics mart built by dbt from the generated slates."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import torch

import ranking_fixtures as fx
from models_ml import config, lookup
from models_ml.cli import recommend as recommend_cli
from models_ml.items import online, policies, seqrec, sequences
from models_ml import warehouse as wh

K = 3
SMALL = seqrec.SeqRecConfig(max_len=8, dim=16, n_layers=1, n_heads=1, dropout=0.0, max_epochs=3, patience=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranking")
    db = fx.build_warehouse(tmp)
    with wh.connect(db) as con:
        seqs, catalog = sequences.load_training_data(con)
    result = seqrec.train(seqs, catalog, SMALL)
    model_dir = tmp / "models" / "sasrec"
    seqrec.save(result, model_dir)
    loaded = seqrec.load(model_dir)
    with wh.connect(db) as con:
        wh.write_table(con, config.RANKER_EVALUATION, seqrec.evaluation_frame(result))  # the model is this warehouse's
        stats = policies.generate_all(con, loaded, K, level=2, history_len=2, chunk_users=4)
        recs = wh.read_table(con, config.RECOMMENDATIONS)
    return {"tmp": tmp, "db": db, "loaded": loaded, "model_dir": model_dir, "stats": stats, "recs": recs}


def slate(recs: pl.DataFrame, policy: str, user: str) -> pl.DataFrame:
    return recs.filter((pl.col("policy") == policy) & (pl.col("user_id") == user)).sort("rank")


def model_scores(world, items: list[str]) -> torch.Tensor:
    cat = world["loaded"].catalog
    idx = np.array([cat.item_ids.index(i) + 1 for i in items])
    return seqrec.score_sequences(world["loaded"].model, [idx])[0]


def top_in(world, user_positive: list[str], consumed: list[str], allowed: list[str], k: int) -> list[str]:
    """The model's best `allowed` items the user did not consume, worked out per user."""
    s = model_scores(world, user_positive)
    cat = world["loaded"].catalog.item_ids
    cands = [i for i in allowed if i not in consumed]
    return sorted(cands, key=lambda i: -float(s[cat.index(i) + 1]))[:k]


def cluster_items(c: int) -> list[str]:
    return [i for i, cc in fx.ITEM_CLUSTER_L2.items() if cc == c]


def test_explore_targets_follow_the_lookup(world):
    recs = world["recs"]
    u1 = slate(recs, "explore", "u1")
    # [1, 2] -> rank 1 is cluster 3 = {i09, i10, i11}; i09 was consumed (negatively): 2 items < K
    assert set(u1["item_id"]) == {"i10", "i11"} and u1["rank"].to_list() == [1, 2]
    assert u1.select("target_cluster_id", "target_source", "lookup_rank").unique().rows() == [(3, "lookup", 1)]
    # [2, 1] -> cluster 4 = {i12}: a one-item slate, never padded from other clusters
    u4 = slate(recs, "explore", "u4")
    assert u4.select("rank", "item_id", "cluster_id", "target_cluster_id").rows() == [(1, "i12", 4, 4)]
    # [2, 3] -> rank 1 (cluster 1) was consumed by u6, so rank 2 (cluster 4)
    u6 = slate(recs, "explore", "u6")
    assert u6.select("item_id", "target_cluster_id", "lookup_rank").rows() == [("i12", 4, 2)]
    assert set(recs.filter(pl.col("policy") == "explore")["model_version"]) == {world["loaded"].model_version}


def test_explore_falls_back_to_the_model_without_a_lookup_row(world):
    recs = world["recs"]
    # u5: history [3, 4] has no lookup row; it consumed 2, 3, 4, so cluster 1 is the only novel one
    u5 = slate(recs, "explore", "u5")
    assert u5.select("target_cluster_id", "target_source").unique().rows() == [(1, "model_fallback")]
    assert u5["item_id"].to_list() == top_in(world, ["i05", "i06", "i10", "i12"], [], cluster_items(1), K)
    # u2: only one distinct cluster (1) -> no K=2 history; target = cluster of the model's best
    # item outside cluster 1
    u2_pos = ["i02", "i03"]
    best = top_in(world, u2_pos, u2_pos, [i for i in fx.ITEM_CLUSTER_L2 if fx.ITEM_CLUSTER_L2[i] != 1], 1)[0]
    target = fx.ITEM_CLUSTER_L2[best]
    u2 = slate(recs, "explore", "u2")
    assert u2.select("target_cluster_id", "target_source").unique().rows() == [(target, "model_fallback")]
    assert u2["item_id"].to_list() == top_in(world, u2_pos, u2_pos, cluster_items(target), K)


def test_baseline_is_the_unrestricted_model_topk(world):
    consumed = ["i01", "i02", "i03", "i05", "i06", "i07", "i09", "i10"]
    expected = top_in(world, consumed, consumed, list(fx.ITEM_CLUSTER_L2), K)
    assert slate(world["recs"], "baseline", "u6")["item_id"].to_list() == expected


def test_popular_by_hand(world):
    recs = world["recs"]
    # counts: i05 4, i01 3, then i02 i03 i06 i10 at 2 (index order), ...
    assert slate(recs, "popular", "u3").select("item_id", "score").rows() == [("i05", 4.0), ("i01", 3.0), ("i02", 2.0)]
    assert slate(recs, "popular", "u1")["item_id"].to_list() == ["i02", "i03", "i06"]
    # u6 consumed every item with a count >= 2: i12 (1) then zero-count i04, i08 by index
    assert slate(recs, "popular", "u6").select("item_id", "score").rows() == [("i12", 1.0), ("i04", 0.0), ("i08", 0.0)]


def test_every_user_is_served_and_nothing_consumed_is_recommended(world):
    recs = world["recs"]
    users = {"explore": 5, "baseline": 5, "popular": 6}  # u3 has no positive history
    assert {p: recs.filter(pl.col("policy") == p)["user_id"].n_unique() for p in users} == users
    assert recs.filter(pl.col("user_id") == "u3")["policy"].unique().to_list() == ["popular"]
    consumed = fx.interactions().select("user_id", "item_id")
    assert recs.join(consumed, on=["user_id", "item_id"]).height == 0
    # cluster_id is the item's level-2 cluster; ranks are 1..n per slate
    assert all(fx.ITEM_CLUSTER_L2[i] == c for i, c in recs.select("item_id", "cluster_id").iter_rows())
    ranks = recs.group_by("policy", "user_id").agg(pl.col("rank").sort())
    assert all(r.to_list() == list(range(1, len(r) + 1)) for r in ranks["rank"])


def test_generation_stats(world):
    st = world["stats"]
    assert (st.users, st.users_without_positive_history) == (6, 1)
    assert (st.explore_from_lookup, st.explore_model_fallback, st.explore_no_novel_cluster) == (3, 2, 0)
    # explore: u1 (2 items), u4 and u6 (1 item) are short, plus u2 if its cluster was 4
    u2_short = slate(world["recs"], "explore", "u2").height < K
    assert st.short_slates["explore"] == 3 + int(u2_short)
    assert st.rows == {p: world["recs"].filter(pl.col("policy") == p).height for p in config.POLICIES}


def test_chunk_size_does_not_change_the_result(world):
    with wh.connect(world["db"], read_only=True) as con:
        data = policies.load_ranking_data(con, world["loaded"].catalog, 2)
        targets = policies.choose_targets(lookup.lookup_candidates(con, 2, 2), data)
    m, v = world["loaded"].model, world["loaded"].model_version
    one = pl.concat(list(policies.iter_recommendations(m, v, data, targets, K, chunk_users=1)))
    all_ = pl.concat(list(policies.iter_recommendations(m, v, data, targets, K, chunk_users=1000)))
    key = ["policy", "user_id", "rank"]
    # batch size changes float32 summation order, so scores agree to rounding only
    for other in (all_, world["recs"]):
        assert one.sort(key).drop("score").equals(other.sort(key).drop("score"))
        assert np.allclose(one.sort(key)["score"].to_numpy(), other.sort(key)["score"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_failed_generation_leaves_the_previous_table(world, tmp_path):
    db = tmp_path / world["db"].name  # dbt views name the catalog after the file
    shutil.copy(world["db"], db)

    def chunks():
        yield world["recs"].head(2)
        raise RuntimeError("boom")

    with wh.connect(db) as con:
        with pytest.raises(RuntimeError, match="boom"):
            policies.write_recommendations(con, chunks())
        assert wh.read_table(con, config.RECOMMENDATIONS).height == world["recs"].height
        assert not wh.table_exists(con, "ml.__stage_recommendations")


def test_stale_lookup_row_is_an_error_naming_the_row(world, tmp_path):
    db = tmp_path / world["db"].name
    shutil.copy(world["db"], db)
    with wh.connect(db) as con:
        con.execute(f"insert into {config.NOVEL_INTEREST_TRANSITIONS} values (2, 2, [1, 2], 3, 99, 0.1, 'x')")
        with pytest.raises(lookup.StaleLookupError, match=r"ml.novel_interest_transitions: 1 rows .*\[1, 2\], 3, 99"):
            policies.generate_all(con, world["loaded"], K, level=2, history_len=2)
        # nothing was written
        assert wh.read_table(con, config.RECOMMENDATIONS).height == world["recs"].height


def test_short_history_uses_k_equal_j_lookup_rows(world, tmp_path):
    # u2 has one distinct cluster (1); with k = 1 rows in the lookup it is served from them
    db = tmp_path / world["db"].name
    shutil.copy(world["db"], db)
    with wh.connect(db) as con:
        con.execute(f"insert into {config.NOVEL_INTEREST_TRANSITIONS} values (2, 1, [1], 1, 2, 0.8, 'x')")
        data = policies.load_ranking_data(con, world["loaded"].catalog, 2, ["u2", "u1"])
        targets = policies.choose_targets(lookup.lookup_candidates(con, 2, 2, ["u2", "u1"]), data)
    assert {u: (t.cluster_id, t.lookup_rank, t.lookup_score) for u, t in targets.items()} == {
        "u2": (2, 1, 0.8), "u1": (3, 1, 0.6)}


def test_api_explains_one_user(world):
    with wh.connect(world["db"], read_only=True) as con:
        rec = online.recommend("u1", K, "explore", con, world["model_dir"])
    assert rec.items.select("item_id", "title", "cluster_id", "cluster_description").sort("item_id").rows() == [
        ("i10", "Title i10", 3, "fine 3"), ("i11", "Title i11", 3, "fine 3")]
    assert rec.history.rows() == [(1, "fine 1"), (2, "fine 2")]
    assert rec.target == {"cluster_id": 3, "description": "fine 3", "source": "lookup", "lookup_rank": 1,
                          "lookup_score": 0.6}
    # the online path gives exactly the bulk slate
    assert rec.items["item_id"].to_list() == slate(world["recs"], "explore", "u1")["item_id"].to_list()
    text = rec.explain()
    assert text.index('"fine 1" (#1) -> "fine 2" (#2)') < text.index('novel cluster chosen: "fine 3" (#3) via lookup table rank 1')


def test_api_explains_a_model_fallback(world):
    with wh.connect(world["db"], read_only=True) as con:
        rec = online.recommend("u5", K, "explore", con, world["model_dir"])
    assert rec.target["cluster_id"] == 1 and rec.target["source"] == "model_fallback"
    assert rec.suggestions.height == 0
    assert "model fallback: the lookup table has no row for this history" in rec.explain()


def test_api_bad_input(world):
    with wh.connect(world["db"], read_only=True) as con:
        with pytest.raises(lookup.UnknownUserError, match="'nobody' has no interactions in raw.interactions"):
            online.recommend("nobody", K, "explore", con, world["model_dir"])
        with pytest.raises(online.NoPositiveHistoryError, match="'u3' has interactions but none positive"):
            online.recommend("u3", K, "baseline", con, world["model_dir"])
        rec = online.recommend("u3", K, "popular", con, world["model_dir"])
        assert rec.items["item_id"].to_list() == ["i05", "i01", "i02"] and rec.target is None
        with pytest.raises(ValueError, match="policy must be one of"):
            online.recommend("u1", K, "random", con, world["model_dir"])


def test_cli(world, monkeypatch, capsys):
    monkeypatch.setenv("DUCKDB_DATABASE", str(world["db"]))
    monkeypatch.setenv("IE_MODELS_DIR", str(world["model_dir"].parent))
    assert recommend_cli.main(["--user", "u4", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert 'history clusters (oldest first): "fine 2" (#2) -> "fine 1" (#1)' in out
    assert 'novel cluster chosen: "fine 4" (#4) via lookup table rank 1 (score 0.700)' in out
    assert '  1. Title i12 [i12]  cluster: "fine 4" (#4)' in out
    assert recommend_cli.main(["--user", "nobody"]) == 2
    assert "recommend: user 'nobody' has no interactions" in capsys.readouterr().err


def test_exploration_metrics_mart(world):
    # dbt build runs the mart's unit test and data tests too
    fx.run_dbt(world["db"], world["tmp"], ["build", "--select", "stg_recommendations", "exploration_metrics"])
    with wh.connect(world["db"], read_only=True) as con:
        m = {(p, k): v for p, k, v in wh.read_table(con, config.EXPLORATION_METRICS, ["policy", "metric", "value"]).iter_rows()}
    # every explore item is in a cluster the user never consumed, one cluster per slate
    assert m[("explore", "novelty_rate")] == 1.0 and m[("explore", "distinct_clusters_per_slate")] == 1.0
    assert m[("explore", "uci_gain@1")] == 1.0
    # popular, by hand (u3 has no positive history, so 5 slates):
    # u1 [i02 i03 i06] 0 novel; u2 [i05 i01 i06] 2/3; u4 [i02 i03 i06] 0; u5 [i01 i02 i03] 1; u6 [i12 i04 i08] 1/3
    assert m[("popular", "n_slates")] == 5
    assert m[("popular", "novelty_rate")] == pytest.approx(0.4)
    assert m[("popular", "uci_gain@1")] == pytest.approx(3 / 5)  # u2 +2, u5 +1, u6 +4
    assert m[("popular", "uci_gain@5")] == 0.0
    assert m[("popular", "catalog_coverage")] == pytest.approx(8 / 12)
    assert m[("popular", "cluster_coverage")] == pytest.approx(3 / 4)
    assert m[("popular", "mean_slate_size")] == 3.0


# ---- models belong to their warehouse -------------------------------------------------


def test_models_folder_derives_from_the_whole_warehouse_path(tmp_path, monkeypatch):
    monkeypatch.delenv("IE_MODELS_DIR", raising=False)
    dirs = set()
    for folder in ("a", "b"):
        monkeypatch.setenv("DUCKDB_DATABASE", str(tmp_path / folder / "interest_explorer.duckdb"))
        d = config.models_dir()
        assert d.parent == config.REPO_ROOT / "warehouse" / "models" and d.name.startswith("interest_explorer-")
        assert config.ranker_dir() == d / "sasrec"
        dirs.add(d)
    assert len(dirs) == 2  # same file name, different folders: different models
    monkeypatch.setenv("IE_MODELS_DIR", str(tmp_path / "mine"))
    assert config.models_dir() == tmp_path / "mine"


def test_recommend_refuses_a_model_the_warehouse_does_not_record(world, tmp_path, monkeypatch, capsys):
    db = tmp_path / world["db"].name
    shutil.copy(world["db"], db)
    with wh.connect(db) as con:
        con.execute(f"update {config.RANKER_EVALUATION} set model_version = 'sasrec-of-another-warehouse'")
    version = world["loaded"].model_version
    with wh.connect(db, read_only=True) as con:
        with pytest.raises(online.ForeignModelError, match=rf"model_version {version}\) does not belong to this "
                                                           "warehouse, which records sasrec-of-another-warehouse"):
            online.recommend("u1", K, "explore", con, world["model_dir"])
    monkeypatch.setenv("DUCKDB_DATABASE", str(db))
    monkeypatch.setenv("IE_MODELS_DIR", str(world["model_dir"].parent))
    assert recommend_cli.main(["--user", "u1"]) == recommend_cli.EXIT_FOREIGN_MODEL == 4
    assert "does not belong to this warehouse" in capsys.readouterr().err
    with wh.connect(db) as con:
        con.execute(f"drop table {config.RANKER_EVALUATION}")
    assert recommend_cli.main(["--user", "u1"]) == 3
    assert f"{config.RANKER_EVALUATION} does not exist" in capsys.readouterr().err
