"""Interest clustering: hand-worked descriptions and hierarchy invariants on the real
embedding model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models_ml import clusters, config


def test_item_terms_read_metadata_lists_and_prose():
    # a term list: its terms, lower-cased, stop words and person names dropped, each once
    assert clusters.item_terms("Action, Sci-Fi, 1990s, time travel, Stephen King, the, action") == [
        "action", "sci-fi", "1990s", "time travel"]
    # prose: words and two-word phrases without stop words
    assert clusters.item_terms("Sourdough bread for the oven") == [
        "sourdough", "bread", "oven", "sourdough bread", "bread oven"]


def test_person_names_are_first_name_phrases():
    assert clusters.is_person_name("will ferrell") and clusters.is_person_name("leonardo dicaprio")
    assert not clusters.is_person_name("dark comedy") and not clusters.is_person_name("time travel")
    assert not clusters.is_person_name("will")  # one word is a topic, not a name


def test_distinctive_terms_rank_by_class_tfidf():
    # cluster 0 items: {apple, pie}, {apple, tart}; cluster 1: {apple, jazz}, {jazz, guitar}
    # doc freq totals: apple 3, pie 1, tart 1, jazz 2, guitar 1; mean cluster size 2.
    # c0: apple 2/2*ln(1+2/3)=0.511, pie 1/2*ln(1+2/1)=0.549, tart 0.549 -> pie, tart (alphabetical), apple
    # c1: jazz 2/2*ln(1+2/2)=0.693, guitar 0.549, apple 1/2*ln(1+2/3)=0.255
    labels = np.array([0, 0, 1, 1])
    terms = [["apple", "pie"], ["apple", "tart"], ["apple", "jazz"], ["jazz", "guitar"]]
    assert clusters.distinctive_terms(labels, terms) == {0: ["pie", "tart", "apple"], 1: ["jazz", "guitar", "apple"]}
    assert clusters.distinctive_terms(labels, terms, n=1) == {0: ["pie"], 1: ["jazz"]}


def _bag_embedder(vocab: list[str]):
    """A transparent embedder for hand-worked tests: a description is the sum of
    one-hot vectors of its terms (normalised by the caller)."""
    def embed(texts):
        out = np.zeros((len(texts), len(vocab)))
        for i, t in enumerate(texts):
            for term in t.split(clusters.TERM_SEPARATOR):
                out[i, vocab.index(term)] += 1.0
        return out
    return embed


def test_descriptions_maximise_the_margin_to_other_centroids_and_stay_unique():
    # axes: jazz, guitar, bread, oven. Centroids: c0 = jazz-heavy (1, .2, 0, 0),
    # c1 = (.2, 1, 0, 0) guitar-heavy, c2 = bread/oven (0, 0, 1, 1).
    vocab = ["jazz", "guitar", "bread", "oven"]
    cents = np.array([[1.0, 0.2, 0, 0], [0.2, 1.0, 0, 0], [0, 0, 1.0, 1.0]])
    cands = {0: ["jazz", "guitar"], 1: ["jazz", "guitar"], 2: ["bread", "oven"]}
    desc = clusters.describe_level([0, 1, 2], cents, cands, _bag_embedder(vocab))
    # c0: "jazz" has cos 0.981 to c0 and 0.196 to c1 (margin 0.784); "jazz, guitar" is
    # equally close to both (margin 0) -> "jazz". c1 likewise "guitar". c2: "bread, oven"
    # (cos 1.0, margin 1.0) beats "bread" alone (0.707).
    assert desc == {0: "jazz", 1: "guitar", 2: "bread, oven"}
    # two clusters with the same candidates and the same centroid cannot both take the
    # best one: the second takes its next best, never a duplicate
    same = clusters.describe_level([0, 1], np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]),
                                   {0: ["jazz"], 1: ["jazz"]}, _bag_embedder(vocab))
    assert len(set(same.values())) == 2 and same[0] == "jazz" and same[1] == "jazz #1"


def test_quality_counts_self_retrieval_and_topical_terms():
    vocab = ["jazz", "guitar", "bread", "oven"]
    cents = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    embed = _bag_embedder(vocab)
    good = clusters.quality({0: "jazz", 1: "bread, oven"}, cents, [0, 1], {"jazz", "bread"}, embed)
    assert good == {"self_retrieval": 1.0, "topical_share": 2 / 3, "clusters": 2.0}
    swapped = clusters.quality({0: "bread", 1: "jazz"}, cents, [0, 1], set(vocab), embed)
    assert swapped["self_retrieval"] == 0.0 and swapped["topical_share"] == 1.0


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


def test_descriptions_unique_within_level_and_fine_clusters_recover_themes(clustered, small_catalog):
    cl, ic = clustered.clusters, clustered.item_clusters
    # descriptions name their own cluster best, from the items' own terms
    for level in config.LEVELS:
        assert clustered.quality[level]["self_retrieval"] == 1.0
        assert clustered.quality[level]["topical_share"] == 1.0
    for level in config.LEVELS:
        desc = cl.filter(pl.col("level") == level)["description"]
        assert desc.n_unique() == desc.len() and desc.str.len_chars().min() > 0
    fine = ic.filter(pl.col("level") == config.FINE_LEVEL).with_columns(theme=pl.col("item_id").str.slice(0, 3))
    # four clear themes, four clusters: each theme lands in exactly one cluster
    assert fine.group_by("theme").agg(pl.col("cluster_id").n_unique())["cluster_id"].to_list() == [1, 1, 1, 1]
    # every description term is a term of the cluster's own items
    terms = {item: set(clusters.item_terms(text)) for item, text in small_catalog.iter_rows()}
    for cid, description in cl.filter(pl.col("level") == config.FINE_LEVEL).select("cluster_id", "description").iter_rows():
        members = fine.filter(pl.col("cluster_id") == cid)["item_id"].to_list()
        own = set().union(*(terms[i] for i in members))
        assert set(description.split(clusters.TERM_SEPARATOR)) <= own, (description, members)


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
