"""Answer trie and the exact best-first top-m search, on hand-worked fixtures.

The search is model-agnostic: here a fixed table of next-token logits plays the
model, so every expected probability can be worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from models_ml.llm.decoding import best_first_topm, constrained_logp
from models_ml.llm.tokens import AnswerTrie, ClusterSetError, level_descriptions

EOS = 0
# cluster -> answer tokens: 1 and 2 share the first token 5, 3 starts with 8,
# 4 is "5 6" continued (so node [5, 6] branches between EOS and 9).
ANSWERS = {1: [5, 6, EOS], 2: [5, 7, EOS], 3: [8, EOS], 4: [5, 6, 9, EOS]}
# Logits by answer prefix (what the model would give after that prefix).
LOGITS = {
    (): {5: math.log(3.0), 8: 0.0},  # p(5) = 3/4, p(8) = 1/4
    (5,): {6: 0.0, 7: math.log(2.0)},  # p(6) = 1/3, p(7) = 2/3
    (5, 6): {EOS: 0.0, 9: 0.0},  # 1/2 each
}


def table_score(calls):
    def score(requests):
        calls.append([(row, path) for row, path, _ in requests])
        return [np.array([LOGITS[path][t] for t in toks]) for _, path, toks in requests]

    return score


def test_trie_structure():
    trie = AnswerTrie(ANSWERS, EOS)
    assert sorted(trie.root.children) == [5, 8]
    assert trie.root.children[5].leaves == frozenset({1, 2, 4})
    assert trie.walk([5, 6, EOS]).cluster_id == 1
    assert trie.max_len == 4
    # Excluding 3 leaves one choice at the root; excluding 1 and 4 prunes the 6 branch.
    assert [t for t, _ in trie.allowed(trie.root, frozenset({3}))] == [5]
    assert [t for t, _ in trie.allowed(trie.walk([5]), frozenset({1, 4}))] == [7]


def test_best_first_exact_probabilities_and_order():
    trie = AnswerTrie(ANSWERS, EOS)
    calls: list = []
    (res,) = best_first_topm(trie, [frozenset()], 4, table_score(calls))
    # By hand: 2 = 3/4 * 2/3 = 1/2; 3 = 1/4; 1 = 4 = 3/4 * 1/3 * 1/2 = 1/8.
    assert [c for c, _ in res] == [2, 3, 1, 4]  # ties (1 and 4) by cluster id
    assert [round(p, 9) for _, p in res] == [0.5, 0.25, 0.125, 0.125]
    assert math.isclose(sum(p for _, p in res), 1.0)


def test_search_expands_only_what_matters():
    trie = AnswerTrie(ANSWERS, EOS)
    calls: list = []
    (res,) = best_first_topm(trie, [frozenset()], 1, table_score(calls))
    assert res == [(2, pytest.approx(0.5))]
    # Root, then [5]; cluster 2 (1/2) then beats the [5, 6] branch (1/4) and 3 (1/4).
    assert calls == [[(0, ())], [(0, (5,))]]


def test_history_exclusion_renormalises_and_forces():
    trie = AnswerTrie(ANSWERS, EOS)
    calls: list = []
    res = best_first_topm(trie, [frozenset({3}), frozenset({2, 3}), frozenset({1, 2, 3, 4})], 5, table_score(calls))
    # Row 0: root forced to 5; 2 = 2/3, 1 = 4 = 1/3 * 1/2.
    assert [(c, round(p, 9)) for c, p in res[0]] == [(2, round(2 / 3, 9)), (1, round(1 / 6, 9)), (4, round(1 / 6, 9))]
    # Row 1: [5] forced to 6 (7 leads only to 2); only the EOS/9 branch costs.
    assert [(c, round(p, 9)) for c, p in res[1]] == [(1, 0.5), (4, 0.5)]
    # Row 2: every cluster is in the history: nothing to suggest.
    assert res[2] == []
    # The root is never scored when exclusion leaves one choice.
    assert all(path != () for round_ in calls for row, path in round_ if row in (0, 1))


def test_reference_scoring_agrees_with_search():
    trie = AnswerTrie(ANSWERS, EOS)
    for excluded in (frozenset(), frozenset({3}), frozenset({2})):
        (res,) = best_first_topm(trie, [excluded], 10, table_score([]))
        for cid, p in res:
            ref = constrained_logp(trie, ANSWERS[cid], excluded, lambda i, toks, c=cid: [LOGITS[tuple(ANSWERS[c][:i])][t] for t in toks])
            assert math.isclose(math.exp(ref), p, rel_tol=1e-12)


def test_colliding_answers_are_an_error():
    with pytest.raises(ClusterSetError, match="collide after tokenisation"):
        AnswerTrie({1: [5, EOS], 2: [5, EOS]}, EOS)


def test_level_descriptions_validation():
    clusters = pl.DataFrame(
        {"level": [1, 2, 2, 2], "cluster_id": [0, 0, 1, 2], "description": ["all", "a b", "c", " d  e "]}
    )
    assert level_descriptions(clusters, 2) == {0: "a b", 1: "c", 2: "d e"}
    with pytest.raises(ClusterSetError, match="level 1 has 1 cluster"):
        level_descriptions(clusters, 1)
    with pytest.raises(ClusterSetError, match="level 3 has 0 cluster"):
        level_descriptions(clusters, 3)
    dup = clusters.with_columns(pl.when(pl.col("cluster_id") == 2).then(pl.lit("a  b")).otherwise(pl.col("description")).alias("description"))
    with pytest.raises(ClusterSetError, match="clusters 0 and 2 share the description 'a b'"):
        level_descriptions(dup, 2)
