"""lookup_evaluation, count_lookups and successor_counts built by the real dbt CLI on a
hand-made warehouse, every metric checked against values worked out by hand; the
smoothed count model on hand-worked counts.

Fixture, level 2, eight clusters 10..17 (so recall@1 and @5 are reported, @10 is not:
8 <= 10 + K):

    train  t1 [10, 11] -> 12 (fit)   t2 [10, 11] -> 12 (fit)   t3 [10, 11] -> 13 (validation)
           t4 [15, 11] -> 14 (fit)
    eval   e1: [10, 11] -> 12, [11, 12] -> 13        e2: [10, 11] -> 14

    history [10, 11] seen 3 times in train (segment seen_1_4), [11, 12] never (seen_0).

    llm lookup   [10, 11]: 12, 14, 13, 15, 16, 17    [11, 12]: 14, 15, 13, 10, 16, 17
    markov       [10, 11]: 12 (2 history counts), 13 (1), 14 (last cluster 11 once),
                 then 15, 16, 17 (no counts, by id); [11, 12]: never seen, last cluster 12
                 has no successors: popularity 13 (1), 14 (1), then 10, 15, 16, 17.
    popularity   by train counts 12: 2, 13: 1, 14: 1, history excluded, ties by id.

    llm:    e1 12 rank 1, e1 13 rank 3, e2 14 rank 2 -> recall@1 1/3, recall@5 1, MRR (1 + 1/3 + 1/2) / 3
    markov: e1 12 rank 1, e1 13 rank 1, e2 14 rank 3 -> recall@1 2/3, recall@5 1, MRR (1 + 1 + 1/3) / 3
    bootstrap over the two eval users: a replicate is (e1, e1), (e1, e2) or (e2, e2); llm
    recall@1 is then 2/4, 1/3 or 0, llm - markov -1/2, -1/3 or 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from models_ml import config, counts
from models_ml import warehouse as wh
from tests.dbt_helpers import run_dbt

CLUSTERS = list(range(10, 18))
MODELS = ["stg_clusters", "stg_novel_interest_transitions", "stg_policy_lookups", "successor_counts", "count_lookups",
          "lookup_evaluation", "lookup_verdict"]
VARS = {"level": 2, "k": 2, "split_mode": "user", "seed": 42, "bootstrap_samples": 400, "recall_ms": [1, 5, 10],
        "history_seen_bounds": [1, 5]}

TRANSITIONS = [  # user, history, next, split, fold
    ("t1", [10, 11], 12, "train", "fit"), ("t2", [10, 11], 12, "train", "fit"),
    ("t3", [10, 11], 13, "train", "validation"), ("t4", [15, 11], 14, "train", "fit"),
    ("e1", [10, 11], 12, "eval", None), ("e1", [11, 12], 13, "eval", None), ("e2", [10, 11], 14, "eval", None),
]
LLM = {(10, 11): [12, 14, 13, 15, 16, 17], (11, 12): [14, 15, 13, 10, 16, 17]}
# serving: ua has consumed only its history; ub every cluster
SEQUENCES = {"ua": [10, 11], "ub": [12, 13, 14, 15, 16, 17, 10, 11]}


def lookup_frame(lists: dict, policy: str | None = None) -> pl.DataFrame:
    rows = [(2, 2, list(h), r, c, 1.0 / (r + 1), f"{policy or 'llm'}-v1")
            for h, cs in lists.items() for r, c in enumerate(cs, start=1)]
    df = pl.DataFrame(rows, schema={"level": pl.Int32, "k": pl.Int32, "history": pl.List(pl.Int32), "rank": pl.Int32,
                                    "next_cluster_id": pl.Int32, "score": pl.Float64, "model_version": pl.String},
                      orient="row")
    return df if policy is None else df.select(pl.lit(policy).alias("policy"), pl.all())


def write_fixture(path: Path, *, transitions=TRANSITIONS, llm=LLM, clusters=CLUSTERS) -> Path:
    nte = pl.DataFrame(
        [(u, 2, 2, h, n, s, f, "user", i) for i, (u, h, n, s, f) in enumerate(transitions, start=3)],
        schema={"user_id": pl.String, "level": pl.Int32, "k": pl.Int32, "history": pl.List(pl.Int32),
                "next_cluster_id": pl.Int32, "split": pl.String, "fold": pl.String, "split_mode": pl.String,
                "seq_pos": pl.Int32}, orient="row",
    )
    seqs = pl.DataFrame(
        [(u, 2, pos, c) for u, cs in SEQUENCES.items() for pos, c in enumerate(cs, start=1)],
        schema={"user_id": pl.String, "level": pl.Int32, "seq_pos": pl.Int32, "cluster_id": pl.Int32}, orient="row",
    )
    cl = pl.DataFrame({"level": 2, "cluster_id": clusters, "parent_cluster_id": 0,
                       "description": [f"c{c}" for c in clusters], "n_items": 1},
                      schema_overrides={"level": pl.Int32, "cluster_id": pl.Int32, "parent_cluster_id": pl.Int32})
    zero = lookup_frame({h: sorted(c for c in CLUSTERS if c not in h) for h in LLM}, "zero_shot")
    with wh.connect(path) as con:
        wh.write_tables(con, {config.CLUSTERS: cl, config.NOVEL_TRANSITION_EXAMPLES: nte,
                              config.USER_CLUSTER_SEQUENCES: seqs,
                              config.NOVEL_INTEREST_TRANSITIONS: lookup_frame(llm), config.POLICY_LOOKUPS: zero})
    return path


def build(db: Path, work: Path, **vars):
    return run_dbt(["build", "--select", *MODELS, "--exclude", "test_type:unit"], db, work, vars={**VARS, **vars})


def metrics(db: Path) -> dict[tuple[str, str], tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(f"select policy, metric, value, ci_low, ci_high, n from {config.LOOKUP_EVALUATION}").fetchall()
    finally:
        con.close()
    return {(p, m): (v, lo, hi, n) for p, m, v, lo, hi, n in rows}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    work = tmp_path_factory.mktemp("evaluation")
    db = write_fixture(work / "w.duckdb")
    result = build(db, work)
    assert result.ok, result.output[-5000:]
    return db, work


def test_count_lookups_back_off_order(evaluated):
    db, _ = evaluated
    con = duckdb.connect(str(db), read_only=True)
    got = {(p, tuple(h)): [c for c, in con.execute(
        f"select next_cluster_id from {config.COUNT_LOOKUPS} where policy = ? and history = ? order by rank",
        [p, list(h)]).fetchall()] for p in ("markov", "popularity") for h in LLM}
    con.close()
    assert got[("markov", (10, 11))] == [12, 13, 14, 15, 16, 17]
    assert got[("markov", (11, 12))] == [13, 14, 10, 15, 16, 17]
    assert got[("popularity", (10, 11))] == [12, 13, 14, 15, 16, 17]
    assert got[("popularity", (11, 12))] == [13, 14, 10, 15, 16, 17]


def test_accuracy_metrics_by_hand(evaluated):
    m = metrics(evaluated[0])
    assert m[("llm", "recall_at_1")][0] == pytest.approx(1 / 3)
    assert m[("llm", "recall_at_5")][0] == pytest.approx(1.0)
    assert m[("llm", "mrr")][0] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert m[("markov", "recall_at_1")][0] == pytest.approx(2 / 3)
    assert m[("markov", "mrr")][0] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert m[("llm", "recall_at_1")][3] == 3  # n = eval transitions
    # 8 clusters: recall@10 (needs more than 10 + 2) is not reported
    assert ("llm", "recall_at_10") not in m
    # segments: [11, 12] unseen (e1 -> 13 at llm rank 3), [10, 11] seen 3 times
    assert m[("llm", "recall_at_1__seen_0")][:1] + (m[("llm", "recall_at_1__seen_0")][3],) == (0.0, 1)
    assert m[("llm", "recall_at_1__seen_1_4")][0] == pytest.approx(0.5)
    assert m[("markov", "recall_at_1__seen_0")][0] == 1.0
    # seen 0-4, the two together: here every eval transition (no history seen 5+ times)
    assert m[("llm", "recall_at_1__seen_0_4")][0] == pytest.approx(1 / 3)
    assert m[("llm", "recall_at_1__seen_0_4")][3] == 3
    assert m[("markov", "mrr__seen_0_4")][0] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert m[("llm", "diff_recall_at_1_vs_markov__seen_0_4")][0] == pytest.approx(1 / 3 - 2 / 3)
    assert ("llm", "recall_at_1__seen_5_plus") not in m
    # zero_shot lists clusters by id: [10, 11] -> 12 first, 13 second, 14 third
    assert m[("zero_shot", "mrr")][0] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_bootstrap_intervals_and_paired_differences(evaluated):
    m = metrics(evaluated[0])
    # replicates can only be (e1, e1), (e1, e2), (e2, e2): 400 draws cover both extremes
    assert m[("llm", "recall_at_1")][1:3] == (pytest.approx(0.0), pytest.approx(0.5))
    diff = m[("llm", "diff_recall_at_1_vs_markov")]
    assert diff[0] == pytest.approx(1 / 3 - 2 / 3)
    assert diff[1:3] == (pytest.approx(-0.5), pytest.approx(0.0))
    for (policy, metric), (value, lo, hi, _) in m.items():
        if lo is not None:
            assert lo - 1e-9 <= value <= hi + 1e-9, (policy, metric)


def test_bootstrap_is_reproducible_by_seed(evaluated, tmp_path):
    db, _ = evaluated
    first = metrics(db)
    copy = write_fixture(tmp_path / "again.duckdb")
    assert build(copy, tmp_path).ok
    assert metrics(copy) == first
    other = write_fixture(tmp_path / "seed.duckdb")
    assert build(other, tmp_path, seed=7, bootstrap_samples=20).ok
    changed = metrics(other)
    # the point estimates do not depend on the seed, the intervals do
    assert all(changed[key][0] == pytest.approx(first[key][0]) for key in first)
    assert any(changed[key][1:3] != first[key][1:3] for key in first if first[key][1] is not None)


def test_balance_of_top1_answers(evaluated):
    m = metrics(evaluated[0])
    # llm top-1: [10, 11] -> 12, [11, 12] -> 14 over 8 clusters
    assert m[("llm", "distinct_top1")][0] == 2 and m[("llm", "distinct_top1")][3] == 2
    assert m[("llm", "top1_entropy")][0] == pytest.approx(math.log(2) / math.log(8))
    # Gini, counts ascending 0 x6, 1, 1: ((2*7-9) + (2*8-9)) / (8 * 2)
    assert m[("llm", "top1_gini")][0] == pytest.approx(12 / 16)
    assert m[("markov", "distinct_top1")][0] == 2  # 12 and 13


def test_serving_coverage(evaluated):
    m = metrics(evaluated[0])
    # ua ([10, 11]) has five unconsumed clusters listed; ub consumed every cluster
    assert m[("llm", "users_with_unconsumed_suggestion")][0] == 0.5
    assert m[("llm", "users_with_unconsumed_in_top_5")][0] == 0.5
    assert m[("llm", "users_with_unconsumed_suggestion")][3] == 2


def test_verdict_reads_the_targets_off_the_evaluation(evaluated):
    con = duckdb.connect(str(evaluated[0]), read_only=True)
    try:
        rows = con.execute(f"""select target, m, metric, llm_value, baseline, baseline_value, diff, ci_low, ci_high, met, n
                               from {config.LOOKUP_VERDICT} order by target, m""").fetchall()
    finally:
        con.close()
    got = {(t, m): (metric, llm, base, base_v, diff, lo, hi, met, n) for t, m, metric, llm, base, base_v, diff, lo, hi, met, n in rows}
    # recall@1: llm 1/3; markov and popularity tie at 2/3, markov is the best by name; the
    # paired interval of llm - markov is [-1/2, 0] (replicates -1/2, -1/3, 0): not wholly
    # below zero, so met. recall@5: every policy 1, difference 0 [0, 0]: met.
    assert got[("recall_at_least_best_count", 1)] == (
        "recall_at_1", pytest.approx(1 / 3), "markov", pytest.approx(2 / 3), pytest.approx(-1 / 3),
        pytest.approx(-0.5), pytest.approx(0.0), True, 3)
    assert got[("recall_at_least_best_count", 5)][1:] == (1.0, "markov", 1.0, 0.0, 0.0, 0.0, True, 3)
    # seen 0-4 holds every eval transition here: below markov at m = 1, level with it at
    # m = 5, and level is not above every count policy
    assert got[("thin_above_every_count", 1)][0] == "recall_at_1__seen_0_4"
    assert got[("thin_above_every_count", 1)][3:5] == (pytest.approx(2 / 3), pytest.approx(-1 / 3))
    assert got[("thin_above_every_count", 1)][7] is False
    assert got[("thin_above_every_count", 5)][1:] == (1.0, "markov", 1.0, 0.0, 0.0, 0.0, False, 3)
    # distinct top-1 over the two histories: llm 12, 14; markov 12, 13
    assert got[("distinct_top1_at_least_markov", None)] == ("distinct_top1", 2.0, "markov", 2.0, 0.0, None, None, True, 2)
    # recall@10 is not reported on eight clusters, so it has no verdict
    assert len(got) == 5


def test_a_missed_target_warns_and_never_fails(evaluated):
    db, work = evaluated
    result = run_dbt(["test", "--select", "lookup_verdict", "--exclude", "test_type:unit"], db, work, vars=VARS)
    (status,) = [r["status"] for r in result.results if "lookup_verdict_targets_met" in r["unique_id"]]
    # the fixture misses the thin-history target at m = 1 and m = 5: two rows, a warning
    assert result.ok and status == "warn", result.output[-3000:]
    assert "Got 2 results, configured to warn if != 0" in result.output
    strict = run_dbt(["test", "--select", "lookup_verdict", "--exclude", "test_type:unit", "--warn-error"], db, work,
                     vars=VARS)
    assert not strict.ok


def test_verdict_unit_test_passes(evaluated):
    db, work = evaluated
    result = run_dbt(["test", "--select", "lookup_verdict,test_type:unit"], db, work, vars=VARS)
    assert result.unit_tests() == {"lookup_verdict_targets": "pass"}, result.output[-3000:]


def test_other_configurations_keep_their_rows(evaluated, tmp_path):
    db, _ = evaluated
    copy = tmp_path / "modes.duckdb"
    copy.write_bytes(db.read_bytes())
    # the same transitions labelled as a time split: a second block, the first kept
    with wh.connect(copy) as con:
        con.execute(f"update {config.NOVEL_TRANSITION_EXAMPLES} set split_mode = 'time'")
    assert build(copy, tmp_path, split_mode="time").ok
    con = duckdb.connect(str(copy), read_only=True)
    modes = dict(con.execute(f"select split_mode, count(*) from {config.LOOKUP_EVALUATION} group by 1").fetchall())
    con.close()
    assert set(modes) == {"user", "time"} and modes["user"] == modes["time"]


@pytest.mark.parametrize("case, message", [
    ("no_eval", "has no eval transitions at level 2, k 2"),
    ("too_few_clusters", "ml.clusters level 2 has 2 clusters; a history of k = 2 needs at least 3"),
    ("stale_lookup", "name clusters missing from ml.clusters: llm -> 99"),
])
def test_bad_input_is_named_and_the_previous_table_kept(evaluated, tmp_path, case, message):
    db, _ = evaluated
    copy = tmp_path / f"{case}.duckdb"
    copy.write_bytes(db.read_bytes())
    before = metrics(copy)
    with wh.connect(copy) as con:
        if case == "no_eval":
            con.execute(f"update {config.NOVEL_TRANSITION_EXAMPLES} set split = 'train'")
        elif case == "too_few_clusters":
            con.execute(f"delete from {config.CLUSTERS} where cluster_id > 11")
        else:
            con.execute(f"update {config.NOVEL_INTEREST_TRANSITIONS} set next_cluster_id = 99 "
                        "where history = [10, 11] and rank = 6")
    # (the copy's views name the original file's catalog: rebuild them with the rest)
    result = run_dbt(["run", "--select", *MODELS], copy, tmp_path, vars=VARS)
    assert not result.ok and result.status("lookup_evaluation") == "error"
    assert message in result.output, result.output[-3000:]
    assert metrics(copy) == before


# ---- the smoothed count model ------------------------------------------------------

def _counts() -> counts.SuccessorCounts:
    frame = pl.DataFrame(
        [("history", [1, 2], 3, 2, 1), ("last_cluster", [2], 3, 2, 1), ("last_cluster", [2], 4, 1, 1),
         ("all", [], 3, 2, 1), ("all", [], 4, 1, 1)],
        schema={"context": pl.String, "history": pl.List(pl.Int32), "next_cluster_id": pl.Int32,
                "n_train": pl.Int64, "n_fit": pl.Int64}, orient="row",
    )
    return counts.counts_from_frame(frame, [1, 2, 3, 4, 5])


def test_smoothed_probabilities_by_hand():
    c = _counts()
    # p0 = (n_all + 1) / (3 + 5): [1/8, 1/8, 3/8, 2/8, 1/8] for clusters 1..5
    # p1(. | 2) with beta 1: (n_last + p0) / (3 + 1); p2(. | [1, 2]) with alpha 2: (n_hist + 2 p1) / (2 + 2)
    p0 = np.array([1, 1, 3, 2, 1]) / 8
    p1 = (np.array([0, 0, 2, 1, 0]) + p0) / 4
    p2 = (np.array([0, 0, 2, 0, 0]) + 2 * p1) / 4
    p2[[0, 1]] = 0
    got = counts.smoothed_probs(c, [(1, 2)], alpha=2.0, beta=1.0)[0]
    np.testing.assert_allclose(got, p2 / p2.sum())
    assert got[0] == got[1] == 0 and got.sum() == pytest.approx(1.0)
    # an unseen history backs off to its last cluster's successors
    unseen = counts.smoothed_probs(c, [(5, 2)], alpha=2.0, beta=1.0)[0]
    expected = p1.copy()
    expected[[1, 4]] = 0
    np.testing.assert_allclose(unseen, expected / expected.sum())


def test_ranks_break_ties_by_cluster_id_and_skip_excluded():
    probs = np.array([[0.0, 0.0, 0.5, 0.25, 0.25]])
    ids = np.array([1, 2, 3, 4, 5])
    assert counts.ranks_of(probs, ids, [3]).tolist() == [1]
    assert counts.ranks_of(probs, ids, [5]).tolist() == [3]  # tied with 4, which comes first
    assert counts.ranks_of(probs, ids, [1]).tolist() == [0]  # excluded: not ranked
    rows = counts.lookup_rows(probs, ids, [(1, 2)], "markov_smoothed", 2, 2, "v")
    assert rows["next_cluster_id"].to_list() == [3, 4, 5] and rows["rank"].to_list() == [1, 2, 3]
    top2 = counts.lookup_rows(probs, ids, [(1, 2)], "markov_smoothed", 2, 2, "v", depth=2)
    assert top2["next_cluster_id"].to_list() == [3, 4] and top2["score"].to_list() == [0.5, 0.25]


def test_fit_smoothing_chooses_weights_on_the_validation_fold():
    c = _counts()
    # validation: [1, 2] -> 4. Cluster 3 leads the history's, the last cluster's and the
    # overall counts, so 4 is second under every weight: recall@2 (m = 5 - 2 - 1) is 1 and
    # MRR 1/2 everywhere, and the tie goes to the smallest weights.
    validation = pl.DataFrame({"history": [[1, 2]], "next_cluster_id": [4]},
                              schema={"history": pl.List(pl.Int32), "next_cluster_id": pl.Int32})
    s = counts.fit_smoothing(c, validation, grid=(0.1, 1.0, 10.0))
    assert (s.alpha, s.beta) == (0.1, 0.1)
    assert s.validation_mrr == pytest.approx(0.5) and s.validation_transitions == 1
    with pytest.raises(ValueError, match="validation fold has no transitions"):
        counts.fit_smoothing(c, validation.head(0))


def test_fit_smoothing_picks_the_weights_that_rank_the_validation_move_first():
    # fit fold: [1, 2] -> 3 once; from 2 users went to 4 three times and to 3 once.
    # p0 = (n_all + 1) / 9 = [1, 1, 2, 4, 1] / 9; p1(4) - p1(3) = (2 + 2 beta / 9) / (4 + beta);
    # 4 overtakes the history's own 3 when alpha (p1(4) - p1(3)) > 1: alpha 10 with every
    # beta (3.02 at beta 10), never alpha 1 (0.49 at beta 0.1) or 0.1.
    frame = pl.DataFrame(
        [("history", [1, 2], 3, 1, 1), ("last_cluster", [2], 3, 1, 1), ("last_cluster", [2], 4, 3, 3),
         ("all", [], 3, 1, 1), ("all", [], 4, 3, 3)],
        schema={"context": pl.String, "history": pl.List(pl.Int32), "next_cluster_id": pl.Int32,
                "n_train": pl.Int64, "n_fit": pl.Int64}, orient="row",
    )
    c = counts.counts_from_frame(frame, [1, 2, 3, 4, 5], "n_fit")
    validation = pl.DataFrame({"history": [[1, 2]], "next_cluster_id": [4]},
                              schema={"history": pl.List(pl.Int32), "next_cluster_id": pl.Int32})
    s = counts.fit_smoothing(c, validation, grid=(0.1, 1.0, 10.0))
    # recall@2 is 1 everywhere (4 first or second); MRR 1 only at alpha 10; beta ties: the smallest
    assert (s.alpha, s.beta, s.m) == (10.0, 0.1, 2)
    assert s.validation_recall == 1.0 and s.validation_mrr == 1.0


def test_selection_m_leaves_recall_something_to_tell():
    # recall@5 by default; with 8 clusters and K = 3 only 5 lie outside a history, so recall@4
    assert counts.selection_m(40, 2) == 5 and counts.selection_m(8, 3) == 4 and counts.selection_m(3, 2) == 1


def test_counts_name_a_stale_cluster():
    frame = pl.DataFrame(
        [("history", [1, 2], 9, 1, 1)],
        schema={"context": pl.String, "history": pl.List(pl.Int32), "next_cluster_id": pl.Int32,
                "n_train": pl.Int64, "n_fit": pl.Int64}, orient="row",
    )
    with pytest.raises(ValueError, match=r"successor_counts row \(history, history \[1, 2\], next 9\) names a cluster"):
        counts.counts_from_frame(frame, [1, 2, 3, 4, 5])


def test_report_orders_and_labels_the_seen_segments():
    from models_ml.cli import report

    got = sorted(["recall_at_5__seen_5_plus", "recall_at_5__seen_0_4", "recall_at_5__seen_1_4", "recall_at_5__seen_0"],
                 key=report._seen_order)
    assert got == ["recall_at_5__seen_0", "recall_at_5__seen_0_4", "recall_at_5__seen_1_4", "recall_at_5__seen_5_plus"]
    assert [report._seen_label(m) for m in got] == ["seen 0", "seen 0-4", "seen 1-4", "seen 5+"]


def _demo_worlds():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_worlds", config.REPO_ROOT / "bench" / "demo_worlds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_worlds_pool_independent_differences_by_hand():
    # world 1: +0.1 [0.0, 0.2] over 100 transitions, world 2: -0.1 [-0.3, 0.1] over 300.
    # mean (10 - 30) / 400 = -0.05; standard errors 0.1 / z and 0.2 / z, weighted by 1/4
    # and 3/4: sqrt(0.025^2 + 0.15^2) / z = 0.152069 / z, so the interval is -0.05 +- 0.152069
    pooled = _demo_worlds().pool([(0.1, 0.0, 0.2, 100), (-0.1, -0.3, 0.1, 300)])
    assert pooled["value"] == pytest.approx(-0.05)
    assert pooled["ci_low"] == pytest.approx(-0.05 - math.sqrt(0.023125), abs=1e-9)
    assert pooled["ci_high"] == pytest.approx(-0.05 + math.sqrt(0.023125), abs=1e-9)
    assert (pooled["n"], pooled["worlds_above"], pooled["worlds_level"], pooled["worlds_below"]) == (400, 1, 0, 1)
    # numpy inputs (demo_ceiling's bootstrap) pool to the same plain, JSON-writable numbers
    as_numpy = _demo_worlds().pool([(np.float64(0.1), np.float64(0.0), np.float64(0.2), np.int64(100)),
                                    (np.float64(-0.1), np.float64(-0.3), np.float64(0.1), np.int64(300))])
    assert json.loads(json.dumps(as_numpy)) == pytest.approx(pooled)


def test_demo_worlds_report_each_world_as_lookup_verdict_judges_it():
    # the targets are lookup_verdict's (tested above); the bench reads them at recall@m,
    # with the figures from lookup_evaluation and the adapter's match rate
    ev = {("llm", "match_rate"): (0.99, None, None, None)}
    for p, recall, thin, top1 in (("llm", 0.70, 0.60, 30), ("markov", 0.68, 0.55, 30),
                                  ("markov_smoothed", 0.71, 0.60, 25), ("popularity", 0.20, 0.20, 3)):
        ev[(p, "recall_at_5")] = (recall, None, None, 10)
        ev[(p, "recall_at_5__seen_0_4")] = (thin, None, None, 4)
        ev[(p, "distinct_top1")] = (top1, None, None, 10)
    ev[("verdict", "recall_at_least_best_count", "recall_at_5")] = (True, "markov_smoothed")
    ev[("verdict", "recall_at_least_best_count", "recall_at_1")] = (False, "markov")
    ev[("verdict", "thin_above_every_count", "recall_at_5__seen_0_4")] = (False, "markov_smoothed")
    ev[("verdict", "distinct_top1_at_least_markov", "distinct_top1")] = (True, "markov")
    summary = _demo_worlds().world_summary(ev, 5)
    assert summary["targets"] == {"best_count_policy": "markov_smoothed", "recall_not_below_best": True,
                                  "thin_above_every_count_policy": False, "distinct_top1_at_least_markov": True,
                                  "match_rate": 0.99}
    assert summary["markov_smoothed"] == {"recall": 0.71, "seen_0_4": 0.60, "distinct_top1": 25}


def _demo_ceiling():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_ceiling", config.REPO_ROOT / "bench" / "demo_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_ceiling_tabulates_novel_moves_by_hand():
    # user 0 (themes 1 1 2 3 2 4, collapsed 1 2 3 2 4): (1, 2) -> 3 novel, (2, 3) -> 2 a
    # revisit (not counted), (3, 2) -> 4 novel; user 1 (5 6 7): (5, 6) -> 7. The first
    # two positions of a user have no history of two; user 1's first theme does not
    # continue user 0's sequence.
    users = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    themes = np.array([1, 1, 2, 3, 2, 4, 5, 6, 7])
    got = _demo_ceiling().novel_table(users, themes, 8)
    assert [tuple(x) for x in np.argwhere(got)] == [(1, 2, 3), (3, 2, 4), (5, 6, 7)]
    assert got.sum() == 3


def test_demo_ceiling_ranks_by_the_table_outside_the_history():
    # clusters 0..4, m = 2. History (0, 1) left to 2 (5 times), 3 (4) and 0 (9: the
    # history's own cluster, excluded): first 2 = {2, 3}. History (2, 3) never left: the
    # back-off is the novel moves after cluster 3, from (0, 3) -> 4 (2) and (1, 3) -> 1
    # (1): first 2 = {4, 1}. History (4, 1): one move to 3, plus half the back-off after
    # cluster 1 (moves to 0: 9, 2: 5, 3: 4 + 1 of 19): 3 (1 + 5/38), then 0 (9/38) before 2.
    mod = _demo_ceiling()
    table = np.zeros((5, 5, 5))
    table[0, 1, [2, 3, 0]] = [5, 4, 9]
    table[0, 3, 4] = 2
    table[1, 3, 1] = 1
    table[4, 1, 3] = 1
    hist = [[0, 1], [0, 1], [0, 1], [2, 3], [2, 3], [2, 3], [4, 1], [4, 1]]
    label = np.array([2, 3, 4, 4, 1, 0, 3, 0])
    got = mod.ceiling_hits(hist, label, table, m=2)
    assert got.tolist() == [True, True, False, True, True, False, True, True]


def test_demo_ceiling_paired_bootstrap_by_hand():
    # user a: two transitions, the ceiling hits one, llm both; user b: one, the ceiling
    # misses, llm hits. Recall: ceiling 1/3, llm 1, difference -2/3. A replicate is (a, a),
    # (a, b) or (b, b): ceiling 2/4, 1/3 or 0, the difference -1/2, -2/3 or -1.
    mod = _demo_ceiling()
    users = np.array(["a", "a", "b"])
    hits = {"ceiling": np.array([True, False, False]), "llm": np.array([True, True, True])}
    got = mod.bootstrap(users, hits, np.ones(3, dtype=bool), n_boot=200, seed=0)
    assert got["n"] == 3
    assert got["recall"]["ceiling"][0] == pytest.approx(1 / 3, abs=1e-4)
    assert got["recall"]["llm"] == [1.0, 1.0, 1.0]
    value, lo, hi = got["diff"]["ceiling_minus_llm"]
    assert value == pytest.approx(-2 / 3, abs=1e-4)
    assert -1.0 <= lo < hi <= -0.5 and lo == -1.0 and hi == -0.5
    # a mask keeps user b's transition only
    only_b = mod.bootstrap(users, hits, np.array([False, False, True]), n_boot=50, seed=0)
    assert only_b["n"] == 1 and only_b["recall"]["ceiling"][0] == 0.0


def test_demo_ceiling_pair_blind_weight_by_hand():
    # clusters 0..4, m = 1. (0, 1) -> 3 twice, (2, 1) -> 0 three times, (0, 4) -> 2 five
    # times. After last 1: 3 (2/5), 0 (3/5); after first 0: 3 (2/7), 2 (5/7). History
    # (0, 1) ranks 3 first iff 0.4 w + 2/7 (1 - w) > 5/7 (1 - w), i.e. w > 0.517; (2, 1)
    # always ranks 0 first and (0, 4) always 2. So w <= 0.5 wins 8 of 10 moves and w >= 0.6
    # all 10: the smallest best w is 0.6.
    mod = _demo_ceiling()
    table = np.zeros((5, 5, 5))
    table[0, 1, 3], table[2, 1, 0], table[0, 4, 2] = 2, 3, 5
    w, after_last, after_first = mod.pair_blind(table, m=1)
    assert w == 0.6
    assert after_last[1].tolist() == pytest.approx([0.6, 0, 0, 0.4, 0])
    assert after_first[0].tolist() == pytest.approx([0, 0, 5 / 7, 2 / 7, 0])
    # behind a history's own counts: (0, 1) counted once to 2 outranks the back-off's 3
    none = np.zeros(5)
    counted = {(0, 1): np.array([0, 0, 1, 0, 0.0])}
    got = mod.ranked_hits([[0, 1], [0, 1], [2, 1]], np.array([3, 2, 0]),
                          lambda a, b: counted.get((a, b), none), mod.blend(w, after_last, after_first), m=1)
    assert got.tolist() == [False, True, True]


def test_demo_ceiling_pair_hypotheses_by_hand():
    # 5 themes: succ(0) = 1 .5, 2 .3, 3 .2; succ(1) = 0 .65, 4 .35; succ(2) = 3; succ(3) = 2;
    # succ(4) = 0 .65, 1 .35. History (0, 4) draws from 1 .85, 2 .3, 3 .2 (of 1.35): three
    # candidates, the most any history has, so J = 3. (2, 0) has two, 1 (.5) and 3 (1.2, of
    # 1.7): hypotheses 1, 3, 1, candidate 1's mass shared by two. succ(2) + succ(3) hold only
    # 2 and 3, so (2, 3) draws uniformly from 0, 1 and 4.
    succ = np.zeros((5, 5))
    succ[0, [1, 2, 3]] = [0.5, 0.3, 0.2]
    succ[1, [0, 4]] = [0.65, 0.35]
    succ[2, 3] = succ[3, 2] = 1.0
    succ[4, [0, 1]] = [0.65, 0.35]
    pair, prior = _demo_ceiling().pair_hypotheses(succ)
    assert pair.shape == prior.shape == (3, 5, 5)
    assert pair[:, 0, 4].tolist() == [1, 2, 3]
    assert prior[:, 0, 4] == pytest.approx(np.array([0.85, 0.3, 0.2]) / 1.35)
    assert pair[:, 2, 0].tolist() == [1, 3, 1]
    assert prior[:, 2, 0] == pytest.approx([0.25 / 1.7, 1.2 / 1.7, 0.25 / 1.7])
    assert pair[:, 2, 3].tolist() == [0, 1, 4] and prior[:, 2, 3] == pytest.approx([1 / 3] * 3)
    assert prior.sum(axis=0) == pytest.approx(np.ones((5, 5)))  # the diagonal (no pair draw) uniform


def test_demo_ceiling_posterior_by_hand():
    # history (0, 1) over clusters 0..3, two hypotheses: hypothesis 0's population left it to
    # 2 (3 times) and 3 (once), hypothesis 1's to 2 (once) and 3 (3 times); each one's
    # back-off after cluster 1 is the same shares, so rows are (.75, .25) and (.25, .75).
    # m = 1, labels 2 and 3: which one comes first?
    mod = _demo_ceiling()
    tables = np.zeros((2, 4, 4, 4))
    tables[0, 0, 1, [2, 3]] = [3, 1]
    tables[1, 0, 1, [2, 3]] = [1, 3]
    hist, label = [[0, 1], [0, 1]], np.array([2, 3])

    def first(p0: float, moves_to_3: int) -> list[bool]:
        prior = np.zeros((2, 4, 4))
        prior[:, 0, 1] = [p0, 1 - p0]
        train = np.zeros((4, 4, 4))
        train[0, 1, 3] = moves_to_3
        return mod.posterior_hits(hist, label, tables, prior, train, m=1).tolist()

    assert first(0.5, 0) == [True, False]  # a tie at .5: cluster id
    assert first(0.8, 0) == [True, False]  # 2: .8 .75 + .2 .25 = .65
    # one train move to 3: posterior .8 .25 : .2 .75 = 4/7 : 3/7, so 2 scores 3.75/7 > 1/2
    assert first(0.8, 1) == [True, False]
    # two: .8 / 16 : .2 9 / 16 = .05 : .1125, so 3 leads
    assert first(0.8, 2) == [False, True]


def test_demo_ceiling_spike_predictive_by_hand():
    # base (.5, .25, .25), prior (.25, .5, .25), rho .5. No moves: .5 base + .5 prior. One
    # move to 2: its hypothesis gains 1 + .5 / (.5 .25) = 5, posterior (.25, .5, 1.25) / 2,
    # predictive .5 base + .5 (.125, .25, .625) = (.3125, .25, .4375). rho 0 is the base.
    mod = _demo_ceiling()
    base, prior = np.array([0.5, 0.25, 0.25]), np.array([0.25, 0.5, 0.25])
    none = mod.spike_predictive(np.zeros(3), base, prior, [0.5, 0.0])
    assert none == pytest.approx(np.array([[0.375, 0.375, 0.25], [0.5, 0.25, 0.25]]))
    one = mod.spike_predictive(np.array([0, 0, 1.0]), base, prior, [0.5])
    assert one == pytest.approx(np.array([[0.3125, 0.25, 0.4375]]))


def test_demo_ceiling_spike_setting_by_hand():
    # clusters 0..5, m = 1: (3, 1) -> 2 nine times, (0, 1) -> 4 twice. Add-one smoothed, the
    # moves after 1 give 2 10/17 and 4 3/17; after 0, 4 3/8 and every other 1/8. Leaving
    # one (0, 1) -> 4 out, the other gives hypothesis 4 the factor f = 1 + 17 rho / (3 (1 -
    # rho)); with w = 0 (prior = after the first cluster) 4 scores (1 - rho) 3/17 + rho
    # f / (f + 1) and 2 (1 - rho) 10/17 + rho / (f + 1): at rho .3 .356 < .480, at rho .4
    # .437 > .422. A larger w only lowers 4's prior, and (3, 1) -> 2 is first in every
    # setting, so (.4, 0) is the smallest best setting.
    mod = _demo_ceiling()
    train = np.zeros((6, 6, 6))
    train[3, 1, 2], train[0, 1, 4] = 9, 2
    assert mod.spike_setting(train, m=1) == (0.4, 0.0)
    hist, label = [[0, 1], [3, 1]], np.array([4, 2])
    assert mod.spike_hits(hist, label, train, 0.4, 0.0, m=1).tolist() == [True, True]
    assert mod.spike_hits(hist, label, train, 0.1, 0.0, m=1).tolist() == [False, True]
