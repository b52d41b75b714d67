"""The dbt foundation marts, built by the real dbt CLI on a hand-made warehouse and
checked against values worked out by hand.

Fixture (clusters: level 1 = coarse {1, 2}, level 2 = fine {10, 11, 12, 13};
fine 10, 11 -> coarse 1, fine 12, 13 -> coarse 2):

    item  a  b  c  d  e  f  g  h
    fine 10 10 11 12 13 11 12 13
    coarse 1  1  1  2  2  1  2  2

Events (day d = 2024-01-01 + d at 12:00; engagement >= 4.0 is positive):

    u1: a d0 5.0 | b d1 4.0 (threshold is inclusive) | c d2 3.0 (negative) | d d3 4.5 |
        c d4 5.0 | e d5 4.0 | a d20 5.0 | g d21 5.0 | h d22 4.0
    u2: a d0 | e d1 | g d2 | f d2 (all 5.0; g and f share a timestamp, item_id puts f first)
    u3: b d0 2.0 (no positive event)

Positive sequences (consecutive repeats collapsed):

    u1 fine   : 10(a,b) 12 11 13 10 12 13     u1 coarse: 1(a,b) 2 1 2 1 2(g,h)
    u2 fine   : 10 13 11 12                   u2 coarse: 1 2 1 2
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import duckdb
import pytest

from models_ml import config
from tests.dbt_helpers import FOUNDATION_SELECT, day, run_dbt, write_warehouse

FOUNDATION = FOUNDATION_SELECT

ITEMS = [(i, f"title {i}", f"text {i}") for i in "abcdefgh"]
FINE = {"a": 10, "b": 10, "c": 11, "d": 12, "e": 13, "f": 11, "g": 12, "h": 13}
PARENT = {10: 1, 11: 1, 12: 2, 13: 2}
CLUSTERS = [(1, 1, None, "coarse one", 4), (1, 2, None, "coarse two", 4)] + [
    (2, c, PARENT[c], f"fine {c}", 2) for c in (10, 11, 12, 13)]
ITEM_CLUSTERS = [(i, 2, c) for i, c in FINE.items()] + [(i, 1, PARENT[c]) for i, c in FINE.items()]
INTERACTIONS = [
    ("u1", "a", day(0), 5.0), ("u1", "b", day(1), 4.0), ("u1", "c", day(2), 3.0), ("u1", "d", day(3), 4.5),
    ("u1", "c", day(4), 5.0), ("u1", "e", day(5), 4.0), ("u1", "a", day(20), 5.0), ("u1", "g", day(21), 5.0),
    ("u1", "h", day(22), 4.0),
    ("u2", "a", day(0), 5.0), ("u2", "e", day(1), 5.0), ("u2", "g", day(2), 5.0), ("u2", "f", day(2), 5.0),
    ("u3", "b", day(0), 2.0),
]

BASE_VARS = {"k": 2, "novelty_mode": "strict", "positive_threshold": 4.0, "seed": 42, "eval_share": 0.0,
             "max_per_history": 20, "max_per_label": 200, "uci_ns": [1, 2, 3], "uci_window_days": 30,
             "history_lookback": 20}


def rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def fixture_db(path: Path, interactions=INTERACTIONS, items=ITEMS, item_clusters=ITEM_CLUSTERS) -> Path:
    return write_warehouse(path, interactions=interactions, items=items, clusters=CLUSTERS, item_clusters=item_clusters)


@pytest.fixture(scope="module")
def strict_build(tmp_path_factory):
    """dbt build with K = 2, strict novelty, eval_share 0 (everyone in train), UCI N = 1, 2, 3."""
    work = tmp_path_factory.mktemp("dbt_strict")
    db = fixture_db(work / "w.duckdb")
    result = run_dbt(["build", *FOUNDATION], db, work, vars=BASE_VARS)
    assert result.ok, result.output[-5000:]
    return db, result


@pytest.fixture(scope="module")
def local_k3_build(tmp_path_factory):
    """dbt build with K = 3, local novelty, eval_share 1 (everyone in eval), caps of 1."""
    work = tmp_path_factory.mktemp("dbt_local_k3")
    db = fixture_db(work / "w.duckdb")
    vars = dict(BASE_VARS, k=3, novelty_mode="local", eval_share=1.0, max_per_history=1, max_per_label=1)
    # unit tests pin their own vars and ran in strict_build already
    result = run_dbt(["build", *FOUNDATION, "--exclude", "test_type:unit"], db, work, vars=vars)
    assert result.ok, result.output[-5000:]
    return db, result


def d(n: float, hour: int = 12) -> dt.datetime:
    return day(n, hour)


def test_dbt_unit_tests_pass(strict_build):
    _, result = strict_build
    expected = {
        "stg_interactions_positive_threshold",
        "int_positive_events_keeps_positives",
        "int_positive_cluster_events_maps_every_level",
        "user_cluster_sequences_collapses_repeats",
        "novel_transition_examples_strict_k2",
        "novel_transition_examples_local_k2",
        "novel_transition_examples_local_k3",
        "novel_transition_examples_strict_k3",
        "novel_transition_examples_k3_lookback_bound",
        "training_pairs_caps",
        "uci_at_n_windows",
    }
    unit = result.unit_tests()
    assert expected <= set(unit), f"unit tests missing from the build: {expected - set(unit)}"
    assert {name: unit[name] for name in expected} == {name: "pass" for name in expected}


def test_every_data_test_passes(strict_build):
    _, result = strict_build
    tests = {r["unique_id"]: r["status"] for r in result.results if r["unique_id"].startswith("test.")}
    assert len(tests) >= 40  # generic + singular data tests on the foundation models
    assert set(tests.values()) == {"pass"}


def test_sequences_collapse_repeats_at_every_level(strict_build):
    db, _ = strict_build
    got = rows(db, f"""select user_id, level, seq_pos, cluster_id, first_ts, last_ts, n_events
                       from {config.USER_CLUSTER_SEQUENCES} order by user_id, level, seq_pos""")
    assert got == [
        # u1 coarse: a, b (1) | d (2) | c (1) | e (2) | a (1) | g, h (2); c at d2 is negative
        ("u1", 1, 1, 1, d(0), d(1), 2), ("u1", 1, 2, 2, d(3), d(3), 1), ("u1", 1, 3, 1, d(4), d(4), 1),
        ("u1", 1, 4, 2, d(5), d(5), 1), ("u1", 1, 5, 1, d(20), d(20), 1), ("u1", 1, 6, 2, d(21), d(22), 2),
        # u1 fine: a, b (10) | d 12 | c 11 | e 13 | a 10 | g 12 | h 13
        ("u1", 2, 1, 10, d(0), d(1), 2), ("u1", 2, 2, 12, d(3), d(3), 1), ("u1", 2, 3, 11, d(4), d(4), 1),
        ("u1", 2, 4, 13, d(5), d(5), 1), ("u1", 2, 5, 10, d(20), d(20), 1), ("u1", 2, 6, 12, d(21), d(21), 1),
        ("u1", 2, 7, 13, d(22), d(22), 1),
        # u2: a, e, then f before g (same timestamp, item_id order)
        ("u2", 1, 1, 1, d(0), d(0), 1), ("u2", 1, 2, 2, d(1), d(1), 1), ("u2", 1, 3, 1, d(2), d(2), 1),
        ("u2", 1, 4, 2, d(2), d(2), 1),
        ("u2", 2, 1, 10, d(0), d(0), 1), ("u2", 2, 2, 13, d(1), d(1), 1), ("u2", 2, 3, 11, d(2), d(2), 1),
        ("u2", 2, 4, 12, d(2), d(2), 1),
    ]


def test_strict_novel_transitions_k2(strict_build):
    db, _ = strict_build
    got = rows(db, f"""select user_id, level, k, history, next_cluster_id, event_ts, seq_pos, split
                       from {config.NOVEL_TRANSITION_EXAMPLES} order by user_id, level, seq_pos""")
    # u1 fine 10 12 11 13 10 12 13: t3 [10,12]->11 new, t4 [12,11]->13 new, t5..t7 revisit.
    # u2 fine 10 13 11 12: t3 [10,13]->11, t4 [13,11]->12. Coarse: only 2 clusters, all revisits.
    assert got == [
        ("u1", 2, 2, [10, 12], 11, d(4), 3, "train"),
        ("u1", 2, 2, [12, 11], 13, d(5), 4, "train"),
        ("u2", 2, 2, [10, 13], 11, d(2), 3, "train"),
        ("u2", 2, 2, [13, 11], 12, d(2), 4, "train"),
    ]


def test_training_pairs_keep_everything_under_loose_caps(strict_build):
    db, _ = strict_build
    got = rows(db, f"""select level, k, history, next_cluster_id, split, user_id
                       from {config.TRAINING_PAIRS} order by user_id, seq_pos""")
    assert got == [
        (2, 2, [10, 12], 11, "train", "u1"), (2, 2, [12, 11], 13, "train", "u1"),
        (2, 2, [10, 13], 11, "train", "u2"), (2, 2, [13, 11], 12, "train", "u2"),
    ]


def test_uci_at_n(strict_build):
    db, _ = strict_build
    got = rows(db, f"""select user_id, level, window_end, n, uci from {config.UCI_AT_N}
                       order by user_id, level, window_end, n""")
    # 30-day windows aligned to 1970-01-01: 2024-01-01 is day 19723 -> window 657 =
    # [2023-12-19, 2024-01-18); days 20..22 fall in [2024-01-18, 2024-02-17). u3 has no positives.
    a_end, b_end = dt.datetime(2024, 1, 18), dt.datetime(2024, 2, 17)
    assert got == [
        # u1 coarse A: 1 x3 (a, b, c@d4), 2 x2 (d, e) | B: 1 x1 (a), 2 x2 (g, h)
        ("u1", 1, a_end, 1, 2), ("u1", 1, a_end, 2, 2), ("u1", 1, a_end, 3, 1),
        ("u1", 1, b_end, 1, 2), ("u1", 1, b_end, 2, 1), ("u1", 1, b_end, 3, 0),
        # u1 fine A: 10 x2, 11, 12, 13 x1 | B: 10, 12, 13 x1
        ("u1", 2, a_end, 1, 4), ("u1", 2, a_end, 2, 1), ("u1", 2, a_end, 3, 0),
        ("u1", 2, b_end, 1, 3), ("u1", 2, b_end, 2, 0), ("u1", 2, b_end, 3, 0),
        # u2 coarse A: 1 x2 (a, f), 2 x2 (e, g) | fine A: four clusters x1
        ("u2", 1, a_end, 1, 2), ("u2", 1, a_end, 2, 2), ("u2", 1, a_end, 3, 0),
        ("u2", 2, a_end, 1, 4), ("u2", 2, a_end, 2, 0), ("u2", 2, a_end, 3, 0),
    ]
    starts = rows(db, f"select distinct window_end - window_start from {config.UCI_AT_N}")
    assert starts == [(dt.timedelta(days=30),)]


def test_local_novel_transitions_k3(local_k3_build):
    db, _ = local_k3_build
    got = rows(db, f"""select user_id, level, k, history, next_cluster_id, seq_pos, split
                       from {config.NOVEL_TRANSITION_EXAMPLES} order by user_id, level, seq_pos""")
    # u1 fine 10 12 11 13 10 12 13, last 3 distinct before t (oldest first):
    #   t4 [10,12,11] -> 13 | t5 [12,11,13] -> 10 | t6 [11,13,10] -> 12 | t7 [13,10,12] -> 13 in history
    # u2 fine 10 13 11 12: t4 [10,13,11] -> 12. Coarse levels have only 2 clusters: no history.
    assert got == [
        ("u1", 2, 3, [10, 12, 11], 13, 4, "eval"),
        ("u1", 2, 3, [12, 11, 13], 10, 5, "eval"),
        ("u1", 2, 3, [11, 13, 10], 12, 6, "eval"),
        ("u2", 2, 3, [10, 13, 11], 12, 4, "eval"),
    ]


def test_training_pairs_caps(local_k3_build):
    db, _ = local_k3_build
    # max_per_history = 1: the four histories are distinct, all four survive step 1.
    # max_per_label = 1: label 12 has two examples (u1 t6, u2 t4); the smaller sample_key stays.
    examples = rows(db, f"""select user_id, level, k, seq_pos from {config.NOVEL_TRANSITION_EXAMPLES}""")
    assert len(examples) == 4
    keys = {(u, p): _sample_key(u, lv, k, p) for u, lv, k, p in examples}
    label_12 = min([("u1", 6), ("u2", 4)], key=lambda up: (keys[up], up))
    got = rows(db, f"select user_id, seq_pos, next_cluster_id, split from {config.TRAINING_PAIRS} order by next_cluster_id")
    assert got == [("u1", 5, 10, "eval"), (*label_12, 12, "eval"), ("u1", 4, 13, "eval")]
    stored = rows(db, f"select user_id, seq_pos, sample_key from {config.TRAINING_PAIRS}")
    assert {(u, p): key for u, p, key in stored} == {(u, p): keys[(u, p)] for u, p, _ in stored}


def _sample_key(user_id: str, level: int, k: int, seq_pos: int) -> float:
    # the documented, engine-independent key (macros/portability.sql, ie_hash_unit): md5 of
    # 'user_id|level|k|seq_pos|seed', its first 13 hex digits / 2^52
    text = f"{user_id}|{level}|{k}|{seq_pos}|{BASE_VARS['seed']}"
    return int(hashlib.md5(text.encode()).hexdigest()[:13], 16) / 2**52


def test_examples_naming_unknown_clusters_stop_the_build(tmp_path):
    """Item d assigned to a fine cluster (99) that ml.clusters lacks: the sequences and
    the examples mined through it (u1: [10, 99] -> 11, [99, 11] -> 13) fail the marts' own
    tests (clusters must exist at the row's level). (The raw and cluster
    tables themselves are gated by their Great Expectations suites.)"""
    item_clusters = [(i, lv, 99 if (lv, i) == (2, "d") else c) for i, lv, c in ITEM_CLUSTERS]
    db = fixture_db(tmp_path / "bad.duckdb", item_clusters=item_clusters)
    result = run_dbt(["build", *FOUNDATION, "--exclude", "test_type:unit"], db, tmp_path, vars=BASE_VARS)
    assert not result.ok
    failed = set(result.failures())
    assert any("list_values_exist_novel_transition_examples_history" in f for f in failed), failed
    assert any("composite_relationships_user_cluster_sequences" in f for f in failed), failed
    # the build fails (so does the Dagster dbt step, and nothing downstream runs), and
    # dbt's output names the failing test
    assert "list_values_exist_novel_transition_examples_history" in result.output


def test_bad_novelty_mode_is_a_clear_compile_error(tmp_path):
    db = fixture_db(tmp_path / "w.duckdb")
    result = run_dbt(["compile", "--select", "novel_transition_examples"], db, tmp_path,
                     vars=dict(BASE_VARS, novelty_mode="sometimes"))
    assert not result.ok
    assert "novelty_mode must be 'strict' or 'local', got 'sometimes'" in result.output
