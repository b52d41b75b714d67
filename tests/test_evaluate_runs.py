"""`make evaluate`'s plan (orchestration/evaluate.py): which (level, K, split) runs it makes,
in which order, and what each run is told; worked out by hand for 6 coarse / 40 fine clusters."""

from orchestration.evaluate import configurations, run_env

CLUSTERS = {1: 6, 2: 40}


def test_every_k_at_every_level_then_both_splits_default_last(monkeypatch):
    for name in ("IE_LEVEL", "IE_K", "IE_SPLIT_MODE"):
        monkeypatch.delenv(name, raising=False)
    runs = [(r["level"], r["k"], r["split_mode"], r["full"]) for r in configurations(CLUSTERS)]
    assert runs == [
        (1, 1, "user", False), (1, 2, "user", False), (1, 3, "user", False),
        (2, 1, "user", False), (2, 3, "user", False),
        (2, 2, "time", True),
        (2, 2, "user", True),
    ]


def test_a_level_needs_more_than_k_clusters(monkeypatch):
    for name in ("IE_LEVEL", "IE_K", "IE_SPLIT_MODE"):
        monkeypatch.delenv(name, raising=False)
    runs = [(r["level"], r["k"]) for r in configurations({1: 3, 2: 40})]
    assert (1, 3) not in runs and (1, 2) in runs  # 3 clusters hold K = 2, not K = 3


def test_comparison_runs_are_cheaper_and_large_levels_use_observed_histories(monkeypatch):
    monkeypatch.delenv("IE_ZERO_SHOT", raising=False)
    monkeypatch.delenv("IE_LLM_HISTORIES", raising=False)
    monkeypatch.setenv("IE_EVAL_LLM_STEPS", "7")
    monkeypatch.setenv("IE_EVAL_MAX_HISTORIES", "5000")
    cheap = run_env({"level": 2, "k": 3, "split_mode": "user", "full": False}, CLUSTERS)
    assert (cheap["IE_LEVEL"], cheap["IE_K"], cheap["IE_SPLIT_MODE"]) == ("2", "3", "user")
    assert cheap["IE_LLM_STEPS"] == "7" and cheap["IE_ZERO_SHOT"] == "0"
    assert cheap["IE_LLM_HISTORIES"] == "observed"  # 40 * 39 * 38 = 59,280 > 5,000
    full = run_env({"level": 2, "k": 2, "split_mode": "time", "full": True}, CLUSTERS)
    assert full["IE_SPLIT_MODE"] == "time"
    assert full.get("IE_ZERO_SHOT") != "0"  # the default runs keep every policy
    assert "IE_LLM_HISTORIES" not in full  # 40 * 39 = 1,560 histories: all of them


def test_evaluation_runs_turn_the_refresh_gates_off_unless_set(monkeypatch):
    for name in ("IE_GATE_MATCH_RATE", "IE_GATE_RECALL_MARGIN", "IE_GATE_NDCG_MARGIN"):
        monkeypatch.delenv(name, raising=False)
    env = run_env({"level": 2, "k": 2, "split_mode": "user", "full": True}, CLUSTERS)
    # evaluation measures losing configurations too (models_ml/gates.py)
    assert (env["IE_GATE_MATCH_RATE"], env["IE_GATE_RECALL_MARGIN"], env["IE_GATE_NDCG_MARGIN"]) == ("0", "-1", "-1")
    monkeypatch.setenv("IE_GATE_MATCH_RATE", "0.9")
    assert run_env({"level": 2, "k": 2, "split_mode": "user", "full": True}, CLUSTERS)["IE_GATE_MATCH_RATE"] == "0.9"
