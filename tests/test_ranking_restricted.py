"""Restricted top-k and target choice on hand-made score matrices (no warehouse)."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from models_ml.items import online, policies, restrict, sequences
from models_ml.lookup import LOOKUP_SOURCE

NEG = float("-inf")
# items 1..6 (0 = PAD); clusters: 1 -> 7, 2 -> 7, 3 -> 8, 4 -> 8, 5 -> 8, 6 -> 9
ITEM_CLUSTER = np.array([restrict.NO_CLUSTER, 7, 7, 8, 8, 8, 9])
INDEX = restrict.ClusterIndex.build(ITEM_CLUSTER)


def scores():
    return torch.tensor([
        [0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    ])


def test_unrestricted_topk_excludes_consumed_and_pad():
    consumed = sequences.from_rows(("a", "b"), [np.array([1]), np.array([6, 5])])
    v, i = restrict.restricted_topk(scores(), 3, consumed)
    assert i.tolist() == [[2, 3, 4], [4, 3, 2]]
    assert torch.allclose(v, torch.tensor([[0.8, 0.7, 0.6], [0.4, 0.3, 0.2]]))


def test_restricted_topk_keeps_only_the_target_cluster():
    consumed = sequences.from_rows(("a", "b"), [np.array([3]), np.array([])])
    s = scores()
    v, i = restrict.restricted_topk(s, 3, consumed, index=INDEX, target_rows=INDEX.rows_of([8, 7]))
    # the restricted path reads scores without changing them
    assert torch.equal(s, scores())
    # row a: cluster 8 = {3, 4, 5} minus consumed 3 -> [4, 5] then nothing (-inf)
    assert i[0, :2].tolist() == [4, 5] and v[0, 2].item() == NEG
    # row b: cluster 7 = {1, 2} by score 0.2 > 0.1
    assert i[1, :2].tolist() == [2, 1] and v[1, 2].item() == NEG


def test_target_without_items_keeps_nothing():
    v, _ = restrict.restricted_topk(scores(), 2, None, index=INDEX,
                                   target_rows=INDEX.rows_of([restrict.NO_CLUSTER, 42]))
    assert torch.isinf(v).all()


def test_rows_only_see_their_own_exclusions_when_rows_are_a_subset():
    consumed = sequences.from_rows(("a", "b", "c"), [np.array([1]), np.array([2]), np.array([1, 2])])
    v, i = restrict.restricted_topk(scores()[[0]], 1, consumed, np.array([1]))  # row 0 is user b
    assert i.tolist() == [[1]]


def test_cluster_index_groups_items_in_catalog_order():
    assert INDEX.clusters.tolist() == [7, 8, 9]
    # rows: 7 -> [1, 2], 8 -> [3, 4, 5], 9 -> [6], then the all-PAD "no target" row
    assert INDEX.members.tolist() == [[1, 2, 0], [3, 4, 5], [6, 0, 0], [0, 0, 0]]
    assert INDEX.item_pos.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert INDEX.item_slot.tolist() == [0, 0, 1, 0, 1, 2, 0]
    assert INDEX.rows_of([9, 7, 5, restrict.NO_CLUSTER, 100]).tolist() == [2, 0, 3, 3, 3]


def test_mask_rows_masks_each_rows_own_items():
    seqs = sequences.from_rows(("a", "b", "c"), [np.array([1, 3]), np.array([]), np.array([2, 5, 6])])
    s = torch.zeros(2, 7)
    sequences.mask_rows(s, seqs, np.array([2, 0]))  # row 0 <- c, row 1 <- a
    assert torch.isinf(s).nonzero().tolist() == [[0, 2], [0, 5], [0, 6], [1, 1], [1, 3]]


def test_popularity_key_orders_by_count_then_index():
    counts = np.array([0, 2, 5, 2, 0, 5])
    key = restrict.popularity_key(counts)
    order = torch.topk(key, 5).indices.tolist()
    assert order == [2, 5, 1, 3, 4]


def _data(consumed_clusters):
    catalog = sequences.Catalog(("i1", "i2", "i3", "i4", "i5", "i6"))
    users = tuple(f"u{j}" for j in range(len(consumed_clusters)))
    empty = sequences.from_rows(users, [np.zeros(0, dtype=np.int64)] * len(users))
    return policies.RankingData(catalog, ITEM_CLUSTER, users, empty, empty,
                               [frozenset(c) for c in consumed_clusters], np.zeros(7, dtype=np.int64), 2)


def test_choose_targets_takes_the_best_ranked_unconsumed_suggestion():
    data = _data([{7}, {7, 8}, {7, 8, 9}])
    cands = pl.DataFrame({
        "user_id": ["u0", "u0", "u1", "u1", "u2", "u9"],
        "rank": [1, 2, 1, 2, 1, 1],
        "next_cluster_id": [8, 9, 8, 9, 9, 8],
        "score": [0.6, 0.3, 0.5, 0.4, 0.9, 0.9],
    })
    # u0: rank 1 (8) is new; u1: rank 1 (8) consumed -> rank 2 (9); u2: 9 consumed -> none;
    # u9 is not a user of this data -> ignored.
    assert policies.choose_targets(cands, data) == {
        "u0": policies.Target(8, LOOKUP_SOURCE, 1, 0.6), "u1": policies.Target(9, LOOKUP_SOURCE, 2, 0.4)}


def test_model_fallback_picks_the_cluster_of_the_best_unconsumed_item():
    data = _data([{7}, {7, 8, 9}])
    stats = policies.GenerationStats()
    tgt, meta = policies._explore_targets(
        scores(), ["u0", "u1"], np.array([0, 1]), data, {}, INDEX, stats,
    )
    # u0 consumed 7: best item outside 7 is item 3 (0.7, cluster 8); u1 consumed all clusters
    assert tgt.tolist() == [8, restrict.NO_CLUSTER]
    assert meta == [policies.Target(8, policies.FALLBACK_SOURCE), None]
    assert stats.explore_model_fallback == 1 and stats.explore_no_novel_cluster == 1


def test_explanation_names_the_consumed_suggestions():
    rec = online.Recommendation(
        user_id="u", policy="explore", items=pl.DataFrame(),
        history=pl.DataFrame({"cluster_id": [3, 5], "description": ["jazz, blues", "space"]}),
        target={"cluster_id": 9, "description": "baking", "source": policies.FALLBACK_SOURCE,
                "lookup_rank": None, "lookup_score": None},
        model_version="m",
        suggestions=pl.DataFrame({"rank": [1, 2], "cluster_id": [4, 6], "description": ["rock", "opera, vocal"]}),
    )
    assert rec.explain().splitlines() == [
        'history clusters (oldest first): "jazz, blues" (#3) -> "space" (#5)',
        'novel cluster chosen: "baking" (#9) via model fallback: the lookup\'s suggestions "rock" (#4), '
        '"opera, vocal" (#6) were all consumed already; the unconsumed cluster of the model\'s best item',
    ]
