"""Interest clustering: hand-worked descriptions and hierarchy invariants on the real
embedding model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models_ml import clusters, config


def test_descriptions_pick_distinctive_terms():
    # cluster 0 items: {apple, pie}, {apple, tart}; cluster 1: {apple, jazz}, {jazz, guitar}
    # doc freq totals: apple 3, pie 1, tart 1, jazz 2, guitar 1; avg cluster size 2.
    # c0: apple 2/2*ln(1+2/3)=0.511, pie 1/2*ln(1+2/1)=0.549, tart 0.549 -> "pie, tart" (tie: alphabetical)
    # c1: jazz 2/2*ln(1+2/2)=0.693, guitar 0.549, apple 1/2*ln(1+2/3)=0.255 -> "jazz, guitar"
    labels = np.array([0, 0, 1, 1])
    tokens = [["apple", "pie"], ["apple", "tart"], ["apple", "jazz"], ["jazz", "guitar"]]
    assert clusters.describe_clusters(labels, tokens) == {0: "pie, tart", 1: "jazz, guitar"}


def test_descriptions_are_made_unique():
    # Six items per cluster, all with alpha and beta; one item each adds gamma (c0) or delta (c1).
    # totals: alpha 12, beta 12, gamma 1, delta 1; avg size 6.
    # c0: alpha = beta = 6/6*ln(1+6/12) = 0.405 > gamma = 1/6*ln(1+6/1) = 0.324, so both
    # clusters start as "alpha, beta"; the collision adds the third term.
    labels = np.array([0] * 6 + [1] * 6)
    tokens = [["alpha", "beta", "gamma"]] + [["alpha", "beta"]] * 5 + [["alpha", "beta", "delta"]] + [["alpha", "beta"]] * 5
    desc = clusters.describe_clusters(labels, tokens)
    assert desc == {0: "alpha, beta, gamma", 1: "alpha, beta, delta"}
    # Identical token sets cannot be told apart by terms: the id keeps them unique.
    same = clusters.describe_clusters(np.array([0, 1]), [["alpha", "beta"], ["alpha", "beta"]])
    assert len(set(same.values())) == 2 and same[0].endswith("#0") and same[1].endswith("#1")


def test_tokenize_drops_stopwords_numbers_and_short_words():
    assert clusters.tokenize("The Toy Story (1995) of a sci-fi robot, and IMAX") == [
        "toy",
        "sci-fi",
        "robot",
        "imax",
    ]


def test_movielens_template_words_are_not_terms():
    # "Tags:" appears only in tagged movies' text, so it would otherwise be their most
    # distinctive term; the template's own words never reach a description.
    text = "Heat (1995). Genres: Action, Crime. Tags: (no genres listed), pacino"
    assert clusters.tokenize(text) == ["heat", "action", "crime", "pacino"]


THEMES = {
    "baking": ["sourdough bread baking", "baking croissants with butter", "bread oven baking tips",
               "sourdough starter and flour", "pastry baking basics", "whole wheat bread baking"],
    "running": ["marathon running plan", "trail running shoes", "running pace and marathon training",
                "interval running workout", "half marathon running race", "running injuries and recovery"],
    "jazz": ["jazz guitar chords", "bebop jazz improvisation", "jazz piano standards",
             "swing jazz big band", "modal jazz saxophone", "jazz guitar solos"],
    "space": ["mars rover space mission", "space telescope galaxies", "rocket launch to orbit",
              "astronaut life on the space station", "black holes in space", "moon landing space history"],
}


@pytest.fixture(scope="module")
def small_catalog() -> pl.DataFrame:
    rows = [(f"{theme[:3]}{i}", text) for theme, texts in THEMES.items() for i, text in enumerate(texts)]
    return pl.DataFrame(rows, schema=["item_id", "text"], orient="row")


@pytest.fixture(scope="module")
def clustered(small_catalog):
    return clusters.build_clusters(small_catalog, n_coarse=2, n_fine=4, seed=0)


def test_every_item_assigned_once_at_every_level(clustered, small_catalog):
    ic = clustered.item_clusters
    assert ic.height == small_catalog.height * len(config.LEVELS)
    per = ic.group_by("item_id", "level").len()
    assert per["len"].max() == 1
    assert set(ic["item_id"]) == set(small_catalog["item_id"])
    assert ic.schema == {"item_id": pl.Utf8, "level": pl.Int32, "cluster_id": pl.Int32}


def test_hierarchy_and_counts_are_consistent(clustered):
    cl, ic = clustered.clusters, clustered.item_clusters
    assert cl.filter(pl.col("level") == config.COARSE_LEVEL).height == 2
    assert cl.filter(pl.col("level") == config.FINE_LEVEL).height == 4
    assert cl.filter(pl.col("level") == config.COARSE_LEVEL)["parent_cluster_id"].null_count() == 2
    # n_items equals the assignment counts, at both levels
    counts = ic.group_by("level", "cluster_id").len()
    joined = cl.join(counts, on=["level", "cluster_id"])
    assert (joined["n_items"] == joined["len"]).all() and joined.height == cl.height
    # an item's coarse cluster is its fine cluster's parent
    wide = ic.pivot(on="level", index="item_id", values="cluster_id")
    parents = dict(cl.filter(pl.col("level") == config.FINE_LEVEL).select("cluster_id", "parent_cluster_id").iter_rows())
    for coarse, fine in wide.select(str(config.COARSE_LEVEL), str(config.FINE_LEVEL)).iter_rows():
        assert parents[fine] == coarse


def test_descriptions_unique_within_level_and_fine_clusters_recover_themes(clustered):
    cl, ic = clustered.clusters, clustered.item_clusters
    for level in config.LEVELS:
        desc = cl.filter(pl.col("level") == level)["description"]
        assert desc.n_unique() == desc.len() and desc.str.len_chars().min() > 0
    fine = ic.filter(pl.col("level") == config.FINE_LEVEL).with_columns(theme=pl.col("item_id").str.slice(0, 3))
    # four clear themes, four clusters: each theme lands in exactly one cluster
    assert fine.group_by("theme").agg(pl.col("cluster_id").n_unique())["cluster_id"].to_list() == [1, 1, 1, 1]
    words = " ".join(cl.filter(pl.col("level") == config.FINE_LEVEL)["description"])
    for term in ("baking", "running", "jazz", "space"):
        assert term in words


def test_bad_input_is_named():
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "text": ["x", "", "z"]})
    with pytest.raises(ValueError, match="raw.items has 1 items without text"):
        clusters.build_clusters(items, 1, 2, embeddings=np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="fewer than the 5 fine clusters"):
        clusters.build_clusters(items, 1, 5, embeddings=np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="coarse"):
        clusters.build_clusters(items, 2, 2, embeddings=np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="no column 'text'"):
        clusters.build_clusters(items.drop("text"), 1, 2)
