"""`make evaluate`'s plan (orchestration/evaluate.py): which (level, K, split) runs it makes,
in which order, and what each run is told; worked out by hand for 6 coarse / 40 fine clusters."""

from orchestration.evaluate import configurations, needs_setup, run_env

CLUSTERS = {1: 6, 2: 40}


def test_every_k_at_every_level_then_both_splits_default_last(monkeypatch):
    for name in ("IE_LEVEL", "IE_K", "IE_SPLIT_MODE"):
        monkeypatch.delenv(name, raising=False)
    runs = [(r["level"], r["k"], r["split_mode"], r["full"]) for r in configurations(CLUSTERS)]
    assert runs == [
        (1, 1, "user", False), (1, 2, "user", False), (1, 3, "user", False),
        (2, 1, "user", False), (2, 3, "user", False),
        (2, 2, "time", False),  # the other split mode: a comparison run too
        (2, 2, "user", True),
    ]


def test_a_warehouse_without_clusters_is_ingested_and_clustered_first(monkeypatch, tmp_path):
    import duckdb

    db = tmp_path / "fresh.duckdb"
    monkeypatch.setenv("DUCKDB_DATABASE", str(db))
    assert needs_setup()  # a fresh clone: no file at all
    with duckdb.connect(str(db)) as con:
        con.execute("create schema ml; create table ml.items (item_id bigint)")
    assert needs_setup()  # ingested, never clustered
    with duckdb.connect(str(db)) as con:
        con.execute("create table ml.clusters (level integer, cluster_id integer)")
    assert not needs_setup()


def test_a_level_needs_more_than_k_clusters(monkeypatch):
    for name in ("IE_LEVEL", "IE_K", "IE_SPLIT_MODE"):
        monkeypatch.delenv(name, raising=False)
    runs = [(r["level"], r["k"]) for r in configurations({1: 3, 2: 40})]
    assert (1, 3) not in runs and (1, 2) in runs  # 3 clusters hold K = 2, not K = 3


def test_comparison_runs_are_cheaper_and_large_levels_use_evaluated_histories(monkeypatch):
    for name in ("IE_ZERO_SHOT", "IE_LLM_HISTORIES", "IE_LLM_STEPS", "IE_LLM_EVAL_EVERY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IE_EVAL_LLM_STEPS", "7")
    monkeypatch.setenv("IE_EVAL_MAX_HISTORIES", "5000")
    cheap = run_env({"level": 2, "k": 3, "split_mode": "user", "full": False}, CLUSTERS)
    assert (cheap["IE_LEVEL"], cheap["IE_K"], cheap["IE_SPLIT_MODE"]) == ("2", "3", "user")
    # 7 steps, evaluated at step 0 and step 7 only, no zero-shot policy
    assert (cheap["IE_LLM_STEPS"], cheap["IE_LLM_EVAL_EVERY"], cheap["IE_ZERO_SHOT"]) == ("7", "7", "0")
    assert cheap["IE_LLM_HISTORIES"] == "evaluated"  # 40 * 39 * 38 = 59,280 > 5,000
    time_split = run_env({"level": 2, "k": 2, "split_mode": "time", "full": False}, CLUSTERS)
    assert time_split["IE_SPLIT_MODE"] == "time" and time_split["IE_LLM_STEPS"] == "7"
    assert "IE_LLM_HISTORIES" not in time_split  # 40 * 39 = 1,560 histories: all of them
    default = run_env({"level": 2, "k": 2, "split_mode": "user", "full": True}, CLUSTERS)
    # the default configuration as `make materialize` runs it: every policy, its own steps
    assert not {"IE_LLM_STEPS", "IE_LLM_EVAL_EVERY", "IE_ZERO_SHOT", "IE_LLM_HISTORIES"} & set(default)


def test_evaluation_runs_turn_the_refresh_gates_off_unless_set(monkeypatch):
    for name in ("IE_GATE_MATCH_RATE", "IE_GATE_RECALL_MARGIN", "IE_GATE_NDCG_MARGIN"):
        monkeypatch.delenv(name, raising=False)
    env = run_env({"level": 2, "k": 2, "split_mode": "user", "full": True}, CLUSTERS)
    # evaluation measures losing configurations too (models_ml/gates.py)
    assert (env["IE_GATE_MATCH_RATE"], env["IE_GATE_RECALL_MARGIN"], env["IE_GATE_NDCG_MARGIN"]) == ("0", "-1", "-1")
    monkeypatch.setenv("IE_GATE_MATCH_RATE", "0.9")
    assert run_env({"level": 2, "k": 2, "split_mode": "user", "full": True}, CLUSTERS)["IE_GATE_MATCH_RATE"] == "0.9"


def test_lookup_histories_all_observed_and_evaluated(monkeypatch):
    import polars as pl

    from models_ml.llm import pipeline
    from models_ml.llm.finetune import LlmInputs

    def frame(histories):
        return pl.DataFrame({"history": histories, "next_cluster_id": [0] * len(histories)},
                            schema={"history": pl.List(pl.Int64), "next_cluster_id": pl.Int64})

    fit, validation, ev = frame([[1, 2], [2, 1]]), frame([[3, 1], [1, 2]]), frame([[2, 3], [3, 1]])
    inputs = LlmInputs(2, 2, {0: "a", 1: "b", 2: "c", 3: "d"}, fit, ev, pl.concat([fit, validation]), validation)
    expect = {
        "all": 12,  # 4 * 3 ordered histories
        "observed": [(1, 2), (2, 1), (2, 3), (3, 1)],  # train (fit and validation) and eval
        "evaluated": [(1, 2), (2, 3), (3, 1)],  # validation and eval: (2, 1) is fit only
    }
    for mode, want in expect.items():
        monkeypatch.setenv("IE_LLM_HISTORIES", mode)
        got = pipeline.lookup_histories(inputs)
        assert (len(got) if mode == "all" else got) == want
