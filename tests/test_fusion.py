"""The fusion of the LLM's scores with the counts, on hand-worked numbers."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models_ml import counts
from models_ml.llm import fusion

IDS = np.array([1, 2, 3, 4, 5])


def test_llm_matrix_spreads_the_unlisted_mass():
    rows = pl.DataFrame({"history": [[1, 2], [1, 2]], "next_cluster_id": [3, 4], "score": [0.5, 0.3]})
    p = fusion.llm_matrix(rows, [(1, 2)], IDS)[0]
    # listed 3 and 4 keep their scores; 5 is the only unlisted novel cluster: 1 - 0.8
    np.testing.assert_allclose(p, [0, 0, 0.5, 0.3, 0.2])


def test_fused_probs_are_the_normalised_log_linear_mix():
    p_llm = np.array([[0, 0, 0.5, 0.3, 0.2]])
    p_cnt = np.array([[0, 0, 0.2, 0.2, 0.6]])
    p0 = np.array([0.1, 0.1, 0.4, 0.2, 0.2])
    got = fusion.fused_probs(p_llm, p_cnt, p0, np.array([0]), [0.5], debias=1.0)[0]
    raw = np.array([0.5 ** 0.5 * 0.2 ** 0.5 / 0.4, 0.3 ** 0.5 * 0.2 ** 0.5 / 0.2, 0.2 ** 0.5 * 0.6 ** 0.5 / 0.2])
    np.testing.assert_allclose(got, [0, 0, *(raw / raw.sum())])
    # w = 1 and no debias: the LLM alone; w = 0: the counts alone
    np.testing.assert_allclose(fusion.fused_probs(p_llm, p_cnt, p0, np.array([0]), [1.0], 0.0), p_llm)
    np.testing.assert_allclose(fusion.fused_probs(p_llm, p_cnt, p0, np.array([0]), [0.0], 0.0), p_cnt)


def test_segments_follow_the_seen_bounds():
    # bounds (1, 5): seen 0 -> 0, 1..4 -> 1, 5+ -> 2 (lookup_evaluation's segments)
    assert fusion.segments(np.array([0, 1, 4, 5, 40]), (1, 5)).tolist() == [0, 1, 1, 2, 2]


def _counts(rows) -> counts.SuccessorCounts:
    frame = pl.DataFrame(rows, schema={"context": pl.String, "history": pl.List(pl.Int32),
                                       "next_cluster_id": pl.Int32, "n_train": pl.Int64, "n_fit": pl.Int64},
                         orient="row")
    return counts.counts_from_frame(frame, IDS)


def test_markov_distinct_top1_follows_the_back_off():
    c = _counts([("history", [1, 2], 3, 2, 2), ("last_cluster", [2], 4, 5, 5), ("all", [], 5, 9, 9)])
    # [1, 2]: its own count picks 3; [3, 2]: the last cluster's picks 4; [2, 3]: popularity 5
    assert fusion.markov_distinct_top1(c, [(1, 2)]) == 1
    assert fusion.markov_distinct_top1(c, [(1, 2), (3, 2), (2, 3)]) == 3
    # the same answer twice counts once
    assert fusion.markov_distinct_top1(c, [(1, 2), (1, 2)]) == 1


def test_choose_trusts_the_llm_where_counts_are_few_and_the_counts_where_they_are_many():
    # 60 validation transitions of a never-seen history (segment 0) and 60 of a
    # well-seen one (segment 2), all to cluster 3. Unseen: the LLM says 3 (0.6), the
    # counts 4 (0.8); 3 leads the mix when w log(.6/.2) > (1 - w) log(.8/.1), w > 0.654.
    # Seen: the LLM says 4, the counts 3; 3 leads when w < 0.654.
    p_llm_val = np.array([[0, 0, 0.6, 0.2, 0.2]] * 60 + [[0, 0, 0.2, 0.6, 0.2]] * 60)
    p_cnt_val = np.array([[0, 0, 0.1, 0.8, 0.1]] * 60 + [[0, 0, 0.8, 0.1, 0.1]] * 60)
    seen = np.array([0] * 60 + [9] * 60)
    p0 = np.full(5, 0.2)  # uniform popularity: the discount changes nothing
    chosen = fusion.choose(p_llm_val, p_cnt_val, p0, seen, [3] * 120, IDS, (1, 5), m=1,
                           p_llm_all=p_llm_val[[0, 60]], p_counts_all=p_cnt_val[[0, 60]], p0_all=p0,
                           seen_all=np.array([0, 9]), min_distinct=1, alpha=1.0, beta=1.0)
    # segment 0: the smallest w above 0.654; segment 2: the smallest below; segment 1 has
    # no validation transition and takes the overall best (a tie, so the smallest w)
    assert chosen.llm_weights == (0.7, 0.0, 0.0)
    assert chosen.validation["fused_recall_at_1"] == 1.0
    assert chosen.validation["llm_only_recall_at_1"] == 0.5 and chosen.validation["counts_recall_at_1"] == 0.5
    assert chosen.debias == 0.0


def test_choose_discounts_popularity_when_the_top1_answers_collapse():
    # three histories; the counts and the LLM both put the popular cluster 5 first
    # everywhere, so the plain fusion names one top-1 cluster; markov named three.
    p = np.array([[0, 0, 0.3, 0.3, 0.4], [0, 0.3, 0, 0.3, 0.4], [0.3, 0, 0.3, 0, 0.4]])
    p0 = np.array([0.05, 0.05, 0.1, 0.1, 0.7])
    chosen = fusion.choose(p, p, p0, np.array([9, 9, 9]), [5, 5, 5], IDS, (1, 5), m=1,
                           p_llm_all=p, p_counts_all=p, p0_all=p0, seen_all=np.array([9, 9, 9]),
                           min_distinct=2, alpha=1.0, beta=1.0)
    # p_llm = p_counts, so every w gives p * p0 ** -gamma and the tie keeps w = 0. gamma 0:
    # 5 first everywhere, one top-1 cluster. gamma 0.25: 0.3 * 0.1 ** -0.25 = 0.533 and
    # 0.3 * 0.05 ** -0.25 = 0.634 beat 0.4 * 0.7 ** -0.25 = 0.437, so the top-1 answers are
    # 3 (tied with 4, lower id), 2 and 1, and 5 is third in every history: recall@1 0, MRR
    # 1/3. Larger gammas rank alike, and the smallest gamma wins the tie.
    assert chosen.debias == 0.25 and chosen.llm_weights == (0.0, 0.0, 0.0)
    assert chosen.validation["fused_distinct_top1"] == 3
    assert chosen.validation["fused_recall_at_1"] == 0.0
    assert chosen.validation["fused_mrr"] == pytest.approx(1 / 3)
    assert chosen.validation["counts_recall_at_1"] == 1.0  # the counts alone, undiscounted


# ---- feedback alignment -----------------------------------------------------------

def test_alignment_learns_the_feature_users_stay_with_and_reranks_only_the_top():
    from models_ml.llm import alignment

    rng = np.random.default_rng(0)
    n, c = 400, 5
    x = rng.normal(size=(n, c, len(alignment.FEATURES)))
    # users go where the similarity feature (the last one) is highest
    target = x[:, :, -1].argmax(axis=1)
    allowed = np.ones((n, c), dtype=bool)
    fitted = alignment.fit(x, allowed, target, np.ones(n))
    assert fitted.weights[-1] > 1.0 and fitted.weights[-1] > max(abs(w) for w in fitted.weights[:-1])
    probs = alignment.scores(x, allowed, fitted)
    assert np.mean(probs.argmax(axis=1) == target) > 0.9
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # re-ranking keeps the base's first n clusters first, in the aligned order
    base = np.array([[0.0, 0.4, 0.3, 0.2, 0.1]])
    aligned = np.array([[0.0, 0.1, 0.2, 0.6, 0.1]])
    out = alignment.rerank(base, aligned, alignment.top_mask(base, 3))[0]
    assert list(np.argsort(-out)[:3]) == [3, 2, 1] and out[0] == 0.0
    assert out[4] < out[1] and out.sum() == pytest.approx(1.0)


def test_alignment_keeps_the_llm_weights_nonnegative():
    from models_ml.llm import alignment

    rng = np.random.default_rng(1)
    n, c = 300, 5
    x = rng.normal(size=(n, c, 3))
    # users go where feature 2 is high and feature 0 (the "LLM") is low
    target = (x[:, :, 2] - 0.7 * x[:, :, 0]).argmax(axis=1)
    allowed, w = np.ones((n, c), dtype=bool), np.ones(n)
    free = alignment.fit(x, allowed, target, w)
    assert free.weights[0] < -0.5  # unconstrained, the scorer inverts feature 0
    held = alignment.fit(x, allowed, target, w, nonnegative=(0, 1))
    # with features 0 and 1 kept >= 0, feature 0 is held at exactly 0 and the rest is the
    # fit without it; feature 1 (noise) is not pushed negative
    assert held.weights[0] == 0.0 and held.weights[1] >= 0.0
    alone = alignment.fit(x[..., 1:], allowed, target, w, nonnegative=(0,))
    np.testing.assert_allclose(held.weights[1:], alone.weights, atol=1e-6)
    assert held.validation_loss >= free.validation_loss
    # where the constrained weight comes out positive anyway, the constraint changes nothing
    target_pos = (x[:, :, 2] + 0.7 * x[:, :, 0]).argmax(axis=1)
    a = alignment.fit(x[..., [0, 2]], allowed, target_pos, w)
    b = alignment.fit(x[..., [0, 2]], allowed, target_pos, w, nonnegative=(0,))
    assert a.weights[0] > 0.5
    np.testing.assert_allclose(a.weights, b.weights)


def test_cover_top1_promotes_the_cheapest_history_and_keeps_the_first_n():
    from models_ml.llm import alignment

    probs = np.array([
        [0.50, 0.30, 0.15, 0.05],  # first 0, then 1
        [0.60, 0.10, 0.25, 0.05],  # first 0, then 2: promoting 2 costs log(0.6 / 0.25) = 0.88
        [0.10, 0.70, 0.15, 0.05],  # first 1, cluster 1's only first answer: never given up
        [0.45, 0.05, 0.40, 0.10],  # first 0, then 2: costs log(0.45 / 0.40) = 0.12, the cheapest
    ])
    out, moved = alignment.cover_top1(probs, n=2, floor=1)
    # cluster 2 (first nowhere) takes history 3; cluster 3 is in no history's first 2, so stays out
    assert moved == 1
    np.testing.assert_array_equal(out[3], [0.40, 0.05, 0.45, 0.10])  # 2 first, 0 shifted to second
    np.testing.assert_array_equal(out[:3], probs[:3])
    assert sorted(set(out.argmax(axis=1))) == [0, 1, 2]
    # floor 2: after history 3, cluster 0 is first twice and gives up no more; cluster 1
    # could only take a history of cluster 0's, so nothing else moves
    out2, moved2 = alignment.cover_top1(probs, n=2, floor=2)
    assert moved2 == 1
    np.testing.assert_array_equal(out2, out)
    # a covered lookup is left as it is
    same, none = alignment.cover_top1(out, n=2, floor=1)
    assert none == 0
    np.testing.assert_array_equal(same, out)


def test_align_falls_back_on_the_exposure_floor_where_no_discount_covers_markovs_top1():
    """Cluster 13 is second in every history and popularity is flat, so no discount makes it
    first: the floor does, in the first of the two equally cheap histories, and nothing
    leaves any history's first 3."""
    from models_ml.llm import pipeline

    base_all = np.array([[0.6, 0.1, 0.0, 0.3], [0.6, 0.1, 0.0, 0.3], [0.1, 0.6, 0.0, 0.3]])
    base_val = base_all[[0, 0, 1, 2, 2, 0]]
    ids, where = np.array([10, 11, 12, 13]), {10: 0, 11: 1, 12: 2, 13: 3}
    feature = lambda b: np.log(np.maximum(b, 1e-12))[..., None]  # the scorer re-learns the base order
    fitted, out = pipeline._align(feature(base_val), feature(base_all), base_val, base_all, [10, 10, 11, 11, 13, 13],
                                  np.ones(6), ids, where, np.zeros(4), np.zeros(4), m=3, m_select=3, min_distinct=3)
    assert fitted.debias == 0.0 and fitted.top1_floor == 1 and fitted.floor_moves == 1
    assert list(out.argmax(axis=1)) == [3, 0, 1]
    assert (out > 0).tolist() == (base_all > 0).tolist()
    # history 0 keeps its values rank by rank: 13 takes the first's, 10 the second's
    assert out[0, 3] == out[1, 0] and out[0, 0] == out[1, 3] and out[0, 1] == out[1, 1]


def test_align_judges_the_discount_on_the_floored_lookup():
    """Cluster 12 (unpopular, log p0 = log 0.05) is first nowhere. A discount of 0.5 makes it
    first in history 0 (the scorer learns weight w = 1.73 on log base: w log(0.35 / 0.5) + 0.5
    log(0.4 / 0.05) = +0.42 > 0, while history 1 keeps 10: w log(0.15 / 0.55) + 1.04 < 0), but
    history 0's two validation users went to 10: recall@1 drops from 5/6 to 3/6. The exposure
    floor makes 12 first in history 0 too (its cheapest, log(0.5 / 0.35), and 10 stays first
    in history 1) without a discount, so the served lookup keeps every first answer at no
    validation cost, and the discount is not bought."""
    from models_ml.llm import alignment, pipeline

    base_all = np.array([[0.50, 0.10, 0.35, 0.05], [0.55, 0.20, 0.15, 0.10],
                         [0.10, 0.50, 0.05, 0.35], [0.10, 0.35, 0.05, 0.50]])
    base_val = base_all[[0, 0, 1, 1, 2, 3]]
    targets = [10, 10, 10, 11, 11, 13]
    ids, where = np.array([10, 11, 12, 13]), {10: 0, 11: 1, 12: 2, 13: 3}
    log_p0 = np.log(np.array([0.4, 0.3, 0.05, 0.25]))
    feature = lambda b: np.log(np.maximum(b, 1e-12))[..., None]
    fitted, out = pipeline._align(feature(base_val), feature(base_all), base_val, base_all, targets, np.ones(6), ids,
                                  where, log_p0, log_p0, m=3, m_select=1, min_distinct=4)
    assert fitted.weights[0] == pytest.approx(1.73, abs=0.01)
    assert fitted.debias == 0.0 and fitted.floor_moves == 1
    assert list(out.argmax(axis=1)) == [2, 0, 1, 3]
    # the premise: gamma 0.5 alone gives the four first answers, at 3/6 recall@1
    discounted = replace(fitted, debias=0.5)
    val_ranked = alignment.rerank(base_val, alignment.scores(feature(base_val), base_val > 0, discounted, log_p0),
                                  alignment.top_mask(base_val, 3))
    assert counts.score_lookup(val_ranked, ids, targets, 1)[0] == pytest.approx(3 / 6)
    all_ranked = alignment.rerank(base_all, alignment.scores(feature(base_all), base_all > 0, discounted, log_p0),
                                  alignment.top_mask(base_all, 3))
    assert list(all_ranked.argmax(axis=1)) == [2, 0, 1, 3]


def test_top1_entropy_is_normalised_by_the_clusters():
    # first answers 0, 0, 1, 2 of 4 clusters: -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) / ln 4 = 0.75
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1], [0.1, 0.2, 0.6, 0.1]])
    assert fusion.top1_entropy(probs) == pytest.approx(0.75)
    assert fusion.top1_entropy(np.eye(4)) == pytest.approx(1.0)


def test_align_buys_evenness_the_floor_cannot_give_with_a_discount():
    """The floor covers every cluster but cannot spread the first answers: with histories 4
    and 5 added (10 first in both, 12 a close second in 4), the floored lookup at gamma 0 or
    0.25 answers 10, 10, 11, 13, 12, 10: entropy (1/2 ln 2 + 1/2 ln 6) / ln 4 = 0.896. Gamma
    0.5 also makes 12 first in history 0: 12, 10, 11, 13, 12, 10, entropy (2/3 ln 3 + 1/3 ln 6)
    / ln 4 = 0.959, at validation recall@1 3/6 instead of 5/6. Required to be at least 0.9
    even (the smoothed counts' evenness, in the pipeline), the scorer pays for it; without
    it the tie at 5/6 goes to 0.25, four distinct first answers before the floor against three."""
    from models_ml.llm import pipeline

    base_all = np.array([[0.50, 0.10, 0.35, 0.05], [0.55, 0.20, 0.15, 0.10], [0.10, 0.50, 0.05, 0.35],
                         [0.10, 0.35, 0.05, 0.50], [0.45, 0.10, 0.40, 0.05], [0.50, 0.30, 0.10, 0.10]])
    base_val = base_all[[0, 0, 1, 1, 2, 3]]
    ids, where = np.array([10, 11, 12, 13]), {10: 0, 11: 1, 12: 2, 13: 3}
    log_p0 = np.log(np.array([0.4, 0.3, 0.05, 0.25]))
    feature = lambda b: np.log(np.maximum(b, 1e-12))[..., None]
    chosen = {}
    for min_entropy in (0.0, 0.9):
        fitted, out = pipeline._align(feature(base_val), feature(base_all), base_val, base_all, [10, 10, 10, 11, 11, 13],
                                      np.ones(6), ids, where, log_p0, log_p0, m=3, m_select=1, min_distinct=4,
                                      min_entropy=min_entropy)
        chosen[min_entropy] = (fitted.debias, list(out.argmax(axis=1)), round(fusion.top1_entropy(out), 4))
    assert chosen[0.0] == (0.25, [0, 0, 1, 3, 2, 0], round((math.log(2) / 2 + math.log(6) / 2) / math.log(4), 4))
    assert chosen[0.9] == (0.5, [2, 0, 1, 3, 2, 0], round((2 * math.log(3) / 3 + math.log(6) / 3) / math.log(4), 4))


def test_rerank_orders_any_candidate_set_and_top_mask_ranks_as_the_lookups_do():
    from models_ml.llm import alignment

    base = np.array([[0.0, 0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.0, 0.25, 0.25]])
    # first 2 by probability, ties by column; column 0 of row 0 has probability 0
    np.testing.assert_array_equal(alignment.top_mask(base, 2),
                                  [[False, True, True, False, False], [True, True, False, False, False]])
    candidates = alignment.top_mask(base, 2)
    candidates[0, 4] = True  # a cluster from another source, last in the base
    aligned = np.array([[0.0, 0.1, 0.2, 0.6, 0.7], [0.1, 0.2, 0.0, 0.3, 0.4]])
    out = alignment.rerank(base, aligned, candidates)
    # row 0: candidates 1, 2, 4 share the base's 0.8 as 0.1 : 0.2 : 0.7; cluster 3 stays below them
    assert list(np.argsort(-out[0])[:3]) == [4, 2, 1] and out[0, 0] == 0.0
    assert out[0, 4] / out[0, 2] == pytest.approx(3.5) and out[0, 3] < out[0, 1]
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    # row 1: clusters 0 and 1, ordered 1 then 0
    assert list(np.argsort(-out[1])[:2]) == [1, 0]


def test_rerank_keeps_every_candidate_above_the_clusters_outside_them():
    from models_ml.llm import alignment

    base = np.array([[0.0, 0.5, 0.3, 0.2]])
    candidates = alignment.top_mask(base, 2)  # clusters 1 and 2
    # the scorer gives candidate 2 next to nothing, or nothing at all: it still ranks
    # second, above cluster 3, which is outside the candidates
    for aligned in (np.array([[0.0, 1.0, 1e-9, 0.0]]), np.array([[0.0, 1.0, 0.0, 0.0]])):
        out = alignment.rerank(base, aligned, candidates)[0]
        assert list(np.argsort(-out)[:3]) == [1, 2, 3] and out[2] > out[3] > 0 and out[0] == 0.0
        np.testing.assert_allclose(out.sum(), 1.0)
        np.testing.assert_array_equal(alignment.top_mask(out[None], 2), candidates)


def test_similarity_is_the_cosine_to_the_mean_of_the_history():
    from models_ml.llm import alignment

    # clusters 7, 8, 9 along x, along y and on the diagonal (lengths differ: normalised first)
    emb = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    sim = alignment.similarity_matrix(emb, [(7, 8), (9, 7)], {7: 0, 8: 1, 9: 2})
    # (7, 8): the mean (0.5, 0.5) points along the diagonal: cos 1/sqrt 2, 1/sqrt 2, 1
    np.testing.assert_allclose(sim[0], [2 ** -0.5, 2 ** -0.5, 1.0])
    # (9, 7): (1/sqrt 2 + 1, 1/sqrt 2) / 2, at 22.5 degrees: cos 22.5, cos 67.5, cos 22.5
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    np.testing.assert_allclose(sim[1], [c, s, c])


def test_user_folds_keep_each_users_moves_together():
    from models_ml.llm import alignment

    users = [f"u{i}" for i in range(20)] * 3
    folds = alignment.user_folds(users)
    assert set(folds) == {0, 1}
    assert all(folds[i] == folds[i % 20] for i in range(60))
    np.testing.assert_array_equal(folds, alignment.user_folds(users))


ALIGN_IDS, ALIGN_WHERE = np.array([10, 11, 12, 13]), {10: 0, 11: 1, 12: 2, 13: 3}


ALIGN_USERS = ["u0", "u1", "u3", "u4", "u2", "u5", "u9", "u10"]  # folds 0, 0, 0, 0, 1, 1, 1, 1


def _align_candidates(targets, users=ALIGN_USERS):
    """History (11, 13): the novelty model's first is 10, the counts' is 12; eight
    validation users each make one move to ``targets``; one feature, the counts' log-probability."""
    from models_ml.llm import pipeline

    base = np.array([[0.7, 0.0, 0.2, 0.0]])
    cnt = np.array([[0.3, 0.0, 0.6, 0.0]])
    n = len(targets)
    feature = np.log(np.maximum(cnt, 1e-12))[..., None]
    return pipeline._align(
        np.repeat(feature, n, axis=0), feature, np.repeat(base, n, axis=0), base, targets, np.ones(n), ALIGN_IDS,
        ALIGN_WHERE, np.zeros(4), np.zeros(4), m=1, m_select=1, min_distinct=1, counts_val=np.repeat(cnt, n, axis=0),
        counts_all=cnt, users=users)


def test_align_adds_the_counts_candidates_where_held_out_users_go_there():
    from models_ml.llm import alignment

    assert alignment.user_folds(ALIGN_USERS).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # six of eight users go to 12, which only the counts rank first, one to 10 in each fold.
    # With m = 1 the base's candidates are {10}: held-out recall@1 2/8. With the counts'
    # first, {10, 12}: the scorer fitted on the other fold (3 moves to 12, whose feature is
    # higher, 1 to 10) puts 12 first for every user: 6/8
    targets = [12, 12, 10, 12, 12, 10, 12, 12]
    fitted, out = _align_candidates(targets)
    assert fitted.candidates == alignment.WITH_COUNTS
    assert dict(fitted.cv_recall) == {alignment.TOP_M: 0.25, alignment.WITH_COUNTS: 0.75}
    assert out[0].argmax() == 2 and fitted.weights[0] > 0
    # everyone goes to 10: both sets recall 8/8 held out, and the tie keeps the base's first m,
    # whose digest is the one the scorer had before candidate sets existed
    fitted, out = _align_candidates([10] * 8)
    assert fitted.candidates == alignment.TOP_M and dict(fitted.cv_recall) == {alignment.TOP_M: 1.0,
                                                                                alignment.WITH_COUNTS: 1.0}
    assert out[0].argmax() == 0
    assert fitted.digest() != replace(fitted, candidates=alignment.WITH_COUNTS).digest()
    assert fitted.digest() == replace(fitted, cv_recall=()).digest()
    # where a fold leaves the base's candidates nothing to fit on (its only user went to 12),
    # the sets cannot be compared held out, and the base's first m stay
    fitted, _ = _align_candidates(targets, users=["u0", "u2", "u1", "u3", "u4", "u6", "u7", "u8"])
    assert alignment.user_folds(["u2"]).tolist() == [1]
    assert fitted.candidates == alignment.TOP_M and fitted.cv_recall == ()


def test_first_cluster_probs_back_off_from_the_first_clusters_successors():
    # successors of 1 (as a last cluster): 3 three times, 4 once; overall 1:2, 2:2, 3:3, 4:1
    ids = np.array([1, 2, 3, 4])
    frame = pl.DataFrame(
        [("last_cluster", [1], 3, 3, 3), ("last_cluster", [1], 4, 1, 1), ("all", [], 1, 2, 2), ("all", [], 2, 2, 2),
         ("all", [], 3, 3, 3), ("all", [], 4, 1, 1)],
        schema={"context": pl.String, "history": pl.List(pl.Int32), "next_cluster_id": pl.Int32,
                "n_train": pl.Int64, "n_fit": pl.Int64}, orient="row")
    c = counts.counts_from_frame(frame, ids)
    # p0 = (n + 1) / (8 + 4) = [3, 3, 4, 2] / 12; beta 4: p1 = ([0, 0, 3, 1] + [1, 1, 4/3, 2/3]) / 8;
    # history (1, 2) drops clusters 1 and 2: [13/3, 5/3] / 6
    got = counts.first_cluster_probs(c, [(1, 2)], beta=4.0)[0]
    np.testing.assert_allclose(got, [0, 0, 13 / 18, 5 / 18])
    # the first cluster, not the last: (2, 1) knows nothing of 2's successors, so popularity
    np.testing.assert_allclose(counts.first_cluster_probs(c, [(2, 1)], beta=4.0)[0], [0, 0, 4 / 6, 2 / 6])


def test_history_counts_are_the_raw_moves_from_each_history():
    c = _counts([("history", [1, 2], 3, 2, 1), ("history", [1, 2], 5, 1, 1)])
    np.testing.assert_array_equal(counts.history_counts(c, [(1, 2), (2, 1)]), [[0, 0, 2, 0, 1], [0, 0, 0, 0, 0]])


def test_alignment_features_give_the_llm_one_column_per_segment():
    from models_ml.llm import alignment

    p_llm = np.array([[0.5, 0.5], [0.25, 0.75]])
    p_cnt = np.array([[0.2, 0.8], [0.6, 0.4]])
    p_first = np.array([[0.1, 0.9], [0.3, 0.7]])
    p0 = np.array([0.4, 0.6])
    sim = np.zeros((2, 2))
    n_hist = np.array([[0, 0], [5, 2]])
    x = alignment.features(p_llm, p_cnt, n_hist, p_first, p0, np.array([0, 7]), np.array([0, 2]), sim)
    col = {name: i for i, name in enumerate(alignment.FEATURES)}
    assert x.shape == (2, 2, len(alignment.FEATURES))
    # history 0 is unseen (segment 0), history 1 seen 7 times (segment 2)
    np.testing.assert_allclose(x[0, :, col["log_p_llm_segment_0"]], np.log([0.5, 0.5]))
    np.testing.assert_allclose(x[0, :, col["log_p_llm_segment_2"]], 0.0)
    np.testing.assert_allclose(x[1, :, col["log_p_llm_segment_2"]], np.log([0.25, 0.75]))
    np.testing.assert_allclose(x[1, :, col["log_p_llm_segment_0"]], 0.0)
    np.testing.assert_allclose(x[1, :, col["seen_x_log_p_counts"]], np.log(8) * np.log([0.6, 0.4]))
    np.testing.assert_allclose(x[0, :, col["log_p_first"]], np.log([0.1, 0.9]))
    np.testing.assert_allclose(x[1, :, col["log_p_either"]], np.log([0.45, 0.55]))
    np.testing.assert_allclose(x[1, :, col["log1p_n_history"]], np.log([6, 3]))
    # the ablation: the count features alone, in the same order
    xc = alignment.features(None, p_cnt, n_hist, p_first, p0, np.array([0, 7]), np.array([0, 2]), sim)
    assert xc.shape[-1] == len(alignment.COUNT_FEATURES)
    np.testing.assert_allclose(xc, x[..., len(alignment.LLM_FEATURES):])


# ---- collaborative evidence in the prompt --------------------------------------------

def test_prompt_evidence_is_one_segment_before_the_tail():
    from models_ml.llm import prompts

    fmt = prompts.PromptFormat()
    plain = fmt.segments(["jazz", "bread"])
    with_ev = fmt.segments(["jazz", "bread"], [("chess", 3), ("birds", 1)])
    assert plain[-1].endswith(fmt.tail) and not with_ev[-2].endswith(fmt.tail)
    assert with_ev[:2] == plain[:2]  # histories still share their prefix
    assert with_ev[-1] == "\n= others then chose: chess (3); birds (1)\n+"
    assert fmt.segments(["jazz"], [])[-1] == "\n= others then chose: nothing yet\n+"


def test_top_successors_leave_the_users_own_moves_out():
    c = _counts([("history", [1, 2], 3, 2, 2), ("history", [1, 2], 4, 1, 1), ("history", [1, 2], 5, 1, 1)])
    assert counts.top_successors(c, (1, 2), 2) == ((3, 2), (4, 1))  # ties (4, 5) by id
    # the example's own user moved to 3 and to 4: without them 3 has 1, 4 none
    assert counts.top_successors(c, (1, 2), 3, minus={3: 1, 4: 1}) == ((3, 1), (5, 1))
    assert counts.top_successors(c, (2, 1), 3) == ()


def _fit_fold_warehouse(tmp_path, rows, count_rows: pl.DataFrame, cluster_ids) -> Path:
    """A warehouse of novel_transition_examples ``rows`` (user, history, next, split,
    fold; training_pairs the same rows), successor_counts ``count_rows`` and clusters."""
    from models_ml import config
    from models_ml import warehouse as wh

    nte = pl.DataFrame(rows, schema={"user_id": pl.String, "history": pl.List(pl.Int32), "next_cluster_id": pl.Int32,
                                     "split": pl.String, "fold": pl.String}, orient="row").with_columns(
        level=pl.lit(2, pl.Int32), k=pl.lit(2, pl.Int32), next_events=pl.lit(1))
    clusters = pl.DataFrame({"level": 2, "cluster_id": list(cluster_ids), "parent_cluster_id": 0,
                             "description": [f"c{c}" for c in cluster_ids], "n_items": 1},
                            schema_overrides={"level": pl.Int32, "cluster_id": pl.Int32})
    db = tmp_path / "w.duckdb"
    with wh.connect(db) as con:
        wh.write_tables(con, {config.CLUSTERS: clusters, config.NOVEL_TRANSITION_EXAMPLES: nte,
                              config.TRAINING_PAIRS: nte.drop("next_events"), config.SUCCESSOR_COUNTS: count_rows})
    return db


def test_training_evidence_leaves_the_examples_own_user_out(tmp_path):
    from models_ml import warehouse as wh
    from models_ml.llm import pipeline

    # fit fold: u1 [0,1]->2, u2 [0,1]->2, u3 [0,1]->3; validation u4 [0,1]->4; eval u5
    rows = [("u1", [0, 1], 2, "train", "fit"), ("u2", [0, 1], 2, "train", "fit"), ("u3", [0, 1], 3, "train", "fit"),
            ("u4", [0, 1], 4, "train", "validation"), ("u5", [0, 1], 4, "eval", None)]
    counts_rows = pl.DataFrame(
        [(2, 2, "history", [0, 1], 2, 2, 2), (2, 2, "history", [0, 1], 3, 1, 1), (2, 2, "history", [0, 1], 4, 1, 0)],
        schema={"level": pl.Int32, "k": pl.Int32, "context": pl.String, "history": pl.List(pl.Int32),
                "next_cluster_id": pl.Int32, "n_train": pl.Int64, "n_fit": pl.Int64}, orient="row")
    with wh.connect(_fit_fold_warehouse(tmp_path, rows, counts_rows, range(5))) as con:
        inputs = pipeline.read_inputs(con, 2, 2)
        ev = pipeline.with_evidence(con, inputs, 2, [(0, 1)])
    got = {(tuple(h), n): [tuple(e) for e in evs] for h, n, evs in ev.train_pairs.iter_rows()}
    # u1 and u2 (-> 2) each see the other's move to 2 and u3's to 3; u3 (-> 3) sees the
    # two moves to 2 and not its own
    assert got[((0, 1), 2)] == [(2, 1), (3, 1)]
    assert got[((0, 1), 3)] == [(2, 2)]
    assert ev.train_pairs.height == 3  # the fit fold only
    # at inference every prompt shows the fit fold's counts: the validation user's move never
    assert ev.evidence == {(0, 1): ((2, 2), (3, 1))}


def test_lookup_variants_build_every_mechanism_from_the_models_rows():
    """The three mechanisms from one set of LLM rows: llm_only as given, llm_fusion and
    llm_alignment ranking every history's clusters outside it (depth 2), versions naming
    the adapter and the weights."""
    from models_ml.llm import finetune as ft
    from models_ml.llm import pairs, pipeline

    desc = {1: "jazz", 2: "bread", 3: "chess", 4: "birds"}
    hist = pairs.all_histories(desc, 2)
    llm_rows = pl.DataFrame(
        [(2, 2, list(h), r, c, s, "llm-test", h[0]) for h in hist
         for r, (c, s) in enumerate(zip([c for c in desc if c not in h], (0.6, 0.4)), start=1)],
        schema=pairs.LOOKUP_SCHEMA, orient="row")
    trans = pl.DataFrame({"history": [[1, 2]] * 40 + [[3, 4]] * 40, "next_cluster_id": [3] * 40 + [1] * 40,
                          "next_events": [2] * 80, "user_id": [f"u{i % 20}" for i in range(80)]},
                         schema={"history": pl.List(pl.Int32), "next_cluster_id": pl.Int32, "next_events": pl.Int64,
                                 "user_id": pl.String})
    count_rows = pl.DataFrame(
        [("history", [1, 2], 3, 30, 20), ("history", [3, 4], 1, 30, 20), ("last_cluster", [2], 3, 30, 20),
         ("last_cluster", [4], 1, 30, 20), ("all", [], 3, 30, 20), ("all", [], 1, 30, 20)],
        schema={"context": pl.String, "history": pl.List(pl.Int32), "next_cluster_id": pl.Int32,
                "n_train": pl.Int64, "n_fit": pl.Int64}, orient="row")
    inputs = ft.LlmInputs(2, 2, desc, trans.head(0), trans, trans, trans)
    variants = pipeline.lookup_variants(inputs, llm_rows, count_rows, m=2)
    assert set(variants) == {"none", "fusion", "alignment", "counts_alignment"}
    # the model's own rows as they came, their version ending with the digest of what they rank
    assert variants["none"].rows.drop("model_version").equals(llm_rows.drop("model_version"))
    assert variants["none"].rows["model_version"].unique().to_list() == [f"llm-test{pairs.ROWS_TAG}{pairs.rows_digest(llm_rows)}"]
    for name in ("fusion", "alignment", "counts_alignment"):
        rows = variants[name].rows
        assert rows["model_version"].n_unique() == 1
        assert rows["model_version"][0].endswith(pairs.ROWS_TAG + pairs.rows_digest(rows))
        assert rows.height == len(hist) * 2 and rows.schema == pl.Schema(pairs.LOOKUP_SCHEMA)
        assert not any(c in h for h, c in rows.select("history", "next_cluster_id").iter_rows())
        assert rows["model_version"][0].startswith("counts_alignment:" if name == "counts_alignment" else "llm-test+")
    assert "+fused-" in variants["fusion"].rows["model_version"][0]
    assert "+aligned-" in variants["alignment"].rows["model_version"][0]
    # the ablation reads no LLM: its scorer has the count features only
    assert variants["counts_alignment"].name == "counts_alignment"
    assert len(variants["counts_alignment"].alignment.weights) == len(pipeline.alignment.COUNT_FEATURES)
    assert len(variants["alignment"].alignment.weights) == len(pipeline.alignment.FEATURES)
    # both scorers' lookups pass the exposure floor: every cluster they list is first somewhere
    for name in ("alignment", "counts_alignment"):
        rows, fitted = variants[name].rows, variants[name].alignment
        assert fitted.top1_floor == pipeline.alignment.TOP1_FLOOR
        assert set(rows.filter(pl.col("rank") == 1)["next_cluster_id"]) == set(rows["next_cluster_id"])
    # the validation transitions go where the counts say: the fused top-1 of [1, 2] is 3
    top = variants["fusion"].rows.filter((pl.col("rank") == 1) & (pl.col("history") == [1, 2]))
    assert top["next_cluster_id"].to_list() == [3]


def test_the_aligned_lookup_ships_unless_another_mechanism_is_set(monkeypatch):
    from models_ml import config

    monkeypatch.delenv("IE_LLM_MECHANISM", raising=False)
    assert config.llm_mechanism() == "alignment"
    monkeypatch.setenv("IE_LLM_MECHANISM", "fusion")
    assert config.llm_mechanism() == "fusion"
    monkeypatch.setenv("IE_LLM_MECHANISM", "counts_alignment")  # an ablation, never shipped
    with pytest.raises(ValueError, match="IE_LLM_MECHANISM must be one of"):
        config.llm_mechanism()


# residual fine-tuning: fit-fold moves u1 [1,2]->3, u2 [1,2]->3, u3 [1,2]->4, u3 [4,2]->5
RESIDUAL_MOVES = [("u1", (1, 2), 3), ("u2", (1, 2), 3), ("u3", (1, 2), 4), ("u3", (4, 2), 5)]


def _residual_counts() -> counts.SuccessorCounts:
    # the counts of exactly those moves (successor_counts.n_fit)
    return _counts([("history", [1, 2], 3, 2, 2), ("history", [1, 2], 4, 1, 1), ("history", [4, 2], 5, 1, 1),
                    ("last_cluster", [2], 3, 2, 2), ("last_cluster", [2], 4, 1, 1), ("last_cluster", [2], 5, 1, 1),
                    ("all", [], 3, 2, 2), ("all", [], 4, 1, 1), ("all", [], 5, 1, 1)])


def test_leave_user_out_probs_take_the_users_moves_out_of_every_count():
    examples = [("u1", (1, 2), 3), ("u3", (1, 2), 4)]
    got = counts.leave_user_out_probs(_residual_counts(), RESIDUAL_MOVES, examples, alpha=1.0, beta=1.0)
    # u1 -> 3, without u1's move: popularity (0+1, 0+1, 1+1, 1+1, 1+1) / (3 + 5);
    # last cluster 2 has {3: 1, 4: 1, 5: 1}: p1 = (one + p0) / 4 = (1, 1, 10, 10, 10) / 32;
    # history {3: 1, 4: 1}: p2 = (hist + p1) / 3 ~ (1, 1, 42, 42, 10); 1 and 2 excluded: 42 / 94
    # u3 -> 4, without both of u3's moves: p0 = (1, 1, 3, 1, 1) / 7; last {3: 2}:
    # p1 = (1, 1, 17, 1, 1) / 21; history {3: 2}: p2 ~ (1, 1, 59, 1, 1); excluded: 1 / 61
    np.testing.assert_allclose(got, [42 / 94, 1 / 61])
    # without taking anything out, u3's move to 4 is the history's own count
    plain = counts.smoothed_probs(_residual_counts(), [(1, 2)], 1.0, 1.0)[0]
    assert plain[3] > 0.2 > got[1]
    with pytest.raises(ValueError, match="same fold"):
        counts.leave_user_out_probs(_residual_counts(), RESIDUAL_MOVES * 2, examples, 1.0, 1.0)


def test_residual_resampling_keeps_each_historys_size_and_follows_the_weights():
    from models_ml.llm import residual

    hist = [(1, 2), (1, 2), (1, 2), (4, 2)]
    p = np.array([42 / 94, 42 / 94, 1 / 61, 0.5])
    # tau = 1: weights 94/42, 94/42, 61 on [1, 2]; cumulative x 3 / 65.48 = 0.103, 0.205, 3:
    # the points 0.5, 1.5, 2.5 all fall on the third row; [4, 2] keeps its one row
    assert residual.resample(hist, residual.weights(p, 1.0)) == [2, 2, 2, 3]
    # tau = 0.5: 1.496, 1.496, 7.810; cumulative x 3 / 10.80 = 0.415, 0.831, 3: rows 1, 2, 2
    assert residual.resample(hist, residual.weights(p, 0.5)) == [1, 2, 2, 3]
    # tau = 0: the pairs as they are
    assert residual.resample(hist, residual.weights(p, 0.0)) == [0, 1, 2, 3]
    np.testing.assert_allclose(residual.weights(np.array([0.0]), 1.0), [1e6])  # the floor


def test_with_residual_resamples_the_fit_folds_training_pairs(tmp_path, monkeypatch):
    from models_ml import warehouse as wh
    from models_ml.llm import pipeline

    rows = [(u, list(h), c, "train", "fit") for u, h, c in RESIDUAL_MOVES] + [
        ("u4", [1, 2], 3, "train", "validation"), ("u5", [1, 2], 3, "eval", None)]
    frame = pl.DataFrame(  # _residual_counts() as successor_counts rows
        [(2, 2, ctx, h, c, n, n) for ctx, h, c, n in [
            ("history", [1, 2], 3, 2), ("history", [1, 2], 4, 1), ("history", [4, 2], 5, 1),
            ("last_cluster", [2], 3, 2), ("last_cluster", [2], 4, 1), ("last_cluster", [2], 5, 1),
            ("all", [], 3, 2), ("all", [], 4, 1), ("all", [], 5, 1)]],
        schema={"level": pl.Int32, "k": pl.Int32, "context": pl.String, "history": pl.List(pl.Int32),
                "next_cluster_id": pl.Int32, "n_train": pl.Int64, "n_fit": pl.Int64}, orient="row")
    assert counts.counts_from_frame(frame, IDS, "n_fit").by_last[2].tolist() == _residual_counts().by_last[2].tolist()
    with wh.connect(_fit_fold_warehouse(tmp_path, rows, frame, IDS.tolist())) as con:
        inputs = pipeline.read_inputs(con, 2, 2)
        assert pipeline.with_residual(con, inputs, 0.0) is inputs
        got = pipeline.with_residual(con, inputs, 1.0)
        monkeypatch.setenv("IE_LLM_RESIDUAL", "1")
        monkeypatch.setenv("IE_LLM_EVIDENCE", "2")
        with pytest.raises(ValueError, match="cannot be combined"):
            pipeline.read_llm_inputs(con, 2, 2)
    # the validation fold's one transition ([1, 2] -> 3) ranks 3 first under every
    # smoothing, so the grid's smallest (0.01, 0.01) wins the tie; then u3's move to 4,
    # without u3, has p ~ 0.01 * 0.01 * (1/7) / 2.01 / 2.01 (~3.5e-6) against ~0.5 for the
    # moves to 3: all three rows of [1, 2] become its move to 4; [4, 2] keeps its one row
    pairs = sorted((tuple(h), n) for h, n in got.train_pairs.iter_rows())
    assert pairs == [((1, 2), 4)] * 3 + [((4, 2), 5)]
    assert got.train_pairs.columns == ["history", "next_cluster_id"]


def test_rows_digest_names_the_ranked_lists_and_nothing_else():
    """The digest is sha256 of "history:rank:cluster;" over the rows sorted by history
    and rank: row order and scores do not change it, a swapped pair of ranks does, and
    versioned() appends it to the rows' one model_version."""
    import hashlib

    from models_ml.llm import pairs

    def frame(recs):
        return pl.DataFrame([(2, 2, h, r, c, s, v, 0) for h, r, c, s, v in recs], schema=pairs.LOOKUP_SCHEMA,
                            orient="row")

    rows = frame([([3, 1], 1, 2, 0.6, "v"), ([1, 2], 2, 4, 0.3, "v"), ([1, 2], 1, 3, 0.7, "v")])
    by_hand = hashlib.sha256(b"1,2:1:3;1,2:2:4;3,1:1:2;").hexdigest()[:8]
    assert pairs.rows_digest(rows) == by_hand
    assert pairs.rows_digest(rows.reverse()) == by_hand
    assert pairs.rows_digest(rows.with_columns(pl.col("score") * 0.5)) == by_hand
    swapped = frame([([3, 1], 1, 2, 0.6, "v"), ([1, 2], 2, 3, 0.3, "v"), ([1, 2], 1, 4, 0.7, "v")])
    assert pairs.rows_digest(swapped) == hashlib.sha256(b"1,2:1:4;1,2:2:3;3,1:1:2;").hexdigest()[:8] != by_hand
    assert pairs.versioned(rows)["model_version"].unique().to_list() == [f"v+rows-{by_hand}"]
    with pytest.raises(ValueError, match=r"one model_version, these rows have \['v', 'w'\]"):
        pairs.versioned(frame([([3, 1], 1, 2, 0.6, "v"), ([1, 2], 1, 3, 0.7, "w")]))
