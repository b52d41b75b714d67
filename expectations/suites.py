"""Great Expectations suites for the tables Python writes (dbt tests own the dbt marts).

A suite validates one table through up to three kinds of frames, each a pandas
DataFrame read from DuckDB (GE 1.x cannot validate DuckDB through its SQL
datasource):

- ``schema``: the table's columns and DuckDB types from information_schema,
- ``table``: the table itself (column-level expectations: nulls, sets, ranges,
  uniqueness),
- one frame per cross-row or cross-table rule, produced by a DuckDB query that
  returns the offending rows; the expectation is that it has none, so a failure
  carries the offending rows as its sample.

Suites are built per run from :class:`Params` (K, LLM level, thresholds read from
``models_ml.config``), so environment overrides apply and tests can pin values.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import great_expectations as gx
from great_expectations.expectations.row_conditions import Column

import polars as pl

from models_ml import config, tables

E = gx.expectations

# Frames every suite has; any other frame name is a violations query.
SCHEMA = "schema"
TABLE = "table"

# DuckDB type families accepted for a contract type: polars writes Int64/Int32 as
# BIGINT/INTEGER and datetimes as TIMESTAMP or TIMESTAMP_NS, all of which satisfy
# the contract's intent.
INT = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
INT_LIST = tuple(f"{t}[]" for t in INT)
FLOAT = ("DOUBLE", "FLOAT")
STR = ("VARCHAR",)
TS = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "TIMESTAMP WITH TIME ZONE")

FAMILY_NAMES = {INT: "an integer type", INT_LIST: "a list of an integer type", FLOAT: "DOUBLE or FLOAT",
                STR: "VARCHAR", TS: "a TIMESTAMP type"}


def _family(dtype: pl.DataType) -> tuple[str, ...]:
    if isinstance(dtype, pl.List):
        return INT_LIST if dtype.inner.is_integer() else tuple(f"{t}[]" for t in _family(dtype.inner))
    if isinstance(dtype, pl.Datetime):
        return TS
    if dtype.is_integer():
        return INT
    if dtype.is_float():
        return FLOAT
    if dtype == pl.String:
        return STR
    raise ValueError(f"no DuckDB type family for polars type {dtype}")


def contract(table: str) -> dict[str, tuple[str, ...]]:
    """The table's required columns and accepted DuckDB types, from the one
    declaration of Python-written tables (models_ml/tables.py)."""
    return {c.name: _family(c.dtype) for c in tables.table(table).required()}

BLANK = r"^\s*$"
FINITE_MAX = sys.float_info.max  # between(-max, max) rejects +-inf; nulls/NaN fail not_null


@dataclass(frozen=True)
class Params:
    """The parameters suites depend on; defaults come from models_ml.config."""

    history_len: int  # K
    llm_level: int
    positive_threshold: float
    max_per_label: int
    max_per_history: int
    top_m: int | None  # LLM lookup ranks per history (at most); None: no bound
    slate_size: int  # recommendations per slate (at most)
    llm_histories: str = "all"  # lookups cover 'all' ordered histories, the 'observed' or the 'evaluated' ones
    levels: tuple[int, ...] = config.LEVELS

    @classmethod
    def from_config(cls) -> Params:
        v = config.dbt_vars()
        return cls(
            history_len=config.history_len(),
            llm_level=config.llm_level(),
            positive_threshold=float(v["positive_threshold"]),
            max_per_label=int(v["max_per_label"]),
            max_per_history=int(v["max_per_history"]),
            top_m=config.llm_top_m(),
            slate_size=config.slate_size(),
            llm_histories=config.llm_histories(),
        )


@dataclass(frozen=True)
class Check:
    """One named rule: a GE expectation evaluated on one frame of the suite."""

    name: str
    expectation: gx.expectations.Expectation
    frame: str = TABLE
    description: str = ""


@dataclass(frozen=True)
class Suite:
    table: str
    columns: dict[str, tuple[str, ...]]  # required column -> accepted DuckDB types
    checks: tuple[Check, ...]
    queries: dict[str, str] = field(default_factory=dict)  # violations frame -> SQL
    requires: dict[str, tuple[str, ...]] = field(default_factory=dict)  # frame -> tables it reads
    table_sql: str | None = None  # table frame query (default: select *)


def _violation(name: str, sql: str, description: str, requires: tuple[str, ...]) -> tuple[Check, str, tuple]:
    check = Check(
        name=name,
        expectation=E.ExpectTableRowCountToEqual(value=0),
        frame=name,
        description=description,
    )
    return check, sql, requires


def _schema_checks(columns: dict[str, tuple[str, ...]]) -> list[Check]:
    checks = [
        Check(
            "columns_present",
            E.ExpectColumnDistinctValuesToContainSet(column="column_name", value_set=list(columns)),
            SCHEMA,
            "every contract column exists",
        )
    ]
    for col, types in columns.items():
        checks.append(
            Check(
                f"type_{col}",
                E.ExpectColumnValuesToBeInSet(
                    column="data_type",
                    value_set=list(types),
                    row_condition=Column("column_name") == col,
                ),
                SCHEMA,
                f"{col} is {FAMILY_NAMES.get(types, ' or '.join(types))}",
            )
        )
    return checks


def _not_null(*cols: str) -> list[Check]:
    return [Check(f"not_null_{c}", E.ExpectColumnValuesToNotBeNull(column=c), description=f"{c} is never null (or NaN)")
            for c in cols]


def _not_blank(*cols: str) -> list[Check]:
    return [
        Check(f"not_blank_{c}", E.ExpectColumnValuesToNotMatchRegex(column=c, regex=BLANK), description=f"{c} is not blank")
        for c in cols
    ]


def _levels(p: Params) -> list[Check]:
    return [Check("level_in_levels", E.ExpectColumnValuesToBeInSet(column="level", value_set=list(p.levels)))]


def _build(table, columns, checks, violations, table_sql=None) -> Suite:
    queries, requires = {}, {}
    all_checks = _schema_checks(columns) + list(checks)
    for check, sql, req in violations:
        all_checks.append(check)
        queries[check.frame] = sql
        requires[check.frame] = (table, *req)
    names = [c.name for c in all_checks]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"suite {table}: duplicate check names {sorted(dupes)}")
    return Suite(table, columns, tuple(all_checks), queries, requires, table_sql)


# ---- list helpers of the lookup table --------------------------------------------


def _history_violations(table: str, p: Params, what: str) -> list:
    c = config.CLUSTERS
    return [
        _violation(
            "history_length_is_k",
            f"select * from {table} where len(history) <> k",
            "history holds exactly k clusters",
            (),
        ),
        _violation(
            "history_clusters_distinct",
            f"select * from {table} where len(list_distinct(history)) <> len(history)",
            "history clusters are distinct",
            (),
        ),
        _violation(
            "next_not_in_history",
            f"select * from {table} where list_contains(history, next_cluster_id)",
            f"no history cluster is {what}",
            (),
        ),
        _violation(
            "clusters_exist_at_level",
            f"""
            with used as (
                select level, unnest(list_append(history, next_cluster_id)) as cluster_id from {table}
            ), missing as (
                select distinct u.level, u.cluster_id from used as u
                where not exists (
                    select 1 from {c} as c where c.level = u.level and c.cluster_id = u.cluster_id
                )
            )
            select * from missing order by level, cluster_id
            """,
            f"history and next clusters exist in {c} at the row's level",
            (c,),
        ),
    ]


# ---- rules shared by ranked tables (the lookup table, the slates) ----------------


def _ranking_violations(table: str, group: str, ranks_description: str) -> list:
    """Ranks of each ``group`` are 1..n, and a better rank never has a lower score."""
    return [
        _violation(
            "ranks_contiguous_from_1",
            f"""
            select {group}, min(rank) as min_rank, max(rank) as max_rank, count(*) as n
            from {table} group by {group}
            having min(rank) <> 1 or max(rank) <> count(*)
            """,
            ranks_description,
            (),
        ),
        _violation(
            "score_non_increasing_with_rank",
            f"""
            with ordered as (
                select *, lag(score) over (partition by {group} order by rank) as prev_score
                from {table}
            )
            select * exclude (prev_score), prev_score from ordered where score > prev_score
            """,
            "a better rank never has a lower score",
            (),
        ),
    ]


# ---- the suites ----------------------------------------------------------------


def interactions_suite(p: Params, existing: frozenset[str] = frozenset()) -> Suite:
    t = config.RAW_INTERACTIONS
    return _build(
        t,
        contract(t),
        [
            *_not_null("user_id", "item_id", "event_ts", "engagement"),
            *_not_blank("user_id", "item_id"),
            Check(
                "engagement_non_negative_finite",
                E.ExpectColumnValuesToBeBetween(column="engagement", min_value=0, max_value=FINITE_MAX),
            ),
            Check(
                "unique_user_item_ts",
                E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "event_ts"]),
                description="one row per event",
            ),
        ],
        [
            _violation(
                "item_exists",
                f"""
                select i.* from {t} as i
                where not exists (select 1 from {config.RAW_ITEMS} as it where it.item_id = i.item_id)
                """,
                f"every item_id exists in {config.RAW_ITEMS}",
                (config.RAW_ITEMS,),
            )
        ],
    )


def items_suite(p: Params, existing: frozenset[str] = frozenset()) -> Suite:
    return _build(
        config.RAW_ITEMS,
        contract(config.RAW_ITEMS),
        [
            *_not_null("item_id", "title", "text"),
            *_not_blank("item_id", "text"),
            Check("unique_item_id", E.ExpectColumnValuesToBeUnique(column="item_id")),
        ],
        [],
    )


def clusters_suite(p: Params, existing: frozenset[str] = frozenset()) -> Suite:
    t, ic = config.CLUSTERS, config.ITEM_CLUSTERS
    coarse = min(p.levels)
    return _build(
        t,
        contract(t),
        [
            *_not_null("level", "cluster_id", "description", "n_items"),
            *_levels(p),
            Check(
                "every_level_present",
                E.ExpectColumnDistinctValuesToContainSet(column="level", value_set=list(p.levels)),
            ),
            Check("unique_level_cluster_id", E.ExpectCompoundColumnsToBeUnique(column_list=["level", "cluster_id"])),
            Check(
                "unique_description_within_level",
                E.ExpectCompoundColumnsToBeUnique(column_list=["level", "description"]),
            ),
            *_not_blank("description"),
            Check("n_items_positive", E.ExpectColumnValuesToBeBetween(column="n_items", min_value=1)),
            Check(
                "coarse_level_has_no_parent",
                E.ExpectColumnValuesToBeNull(
                    column="parent_cluster_id", row_condition=Column("level") == coarse
                ),
            ),
        ],
        [
            _violation(
                "parent_is_cluster_one_level_up",
                f"""
                select c.* from {t} as c
                where c.level > {coarse} and not exists (
                    select 1 from {t} as parent
                    where parent.level = c.level - 1 and parent.cluster_id = c.parent_cluster_id
                )
                """,
                "every fine cluster's parent is a cluster of the level above",
                (),
            ),
            _violation(
                "n_items_matches_item_clusters",
                f"""
                with counted as (
                    select level, cluster_id, count(*) as assigned from {ic} group by level, cluster_id
                )
                select c.level, c.cluster_id, c.n_items, coalesce(counted.assigned, 0) as assigned
                from {t} as c
                left join counted on counted.level = c.level and counted.cluster_id = c.cluster_id
                where c.n_items is distinct from coalesce(counted.assigned, 0)
                order by c.level, c.cluster_id
                """,
                f"n_items equals the number of items assigned in {ic}",
                (ic,),
            ),
        ],
    )


def item_clusters_suite(p: Params, existing: frozenset[str] = frozenset()) -> Suite:
    t, c, items = config.ITEM_CLUSTERS, config.CLUSTERS, config.RAW_ITEMS
    levels = ", ".join(f"({lv})" for lv in p.levels)
    coarse = min(p.levels)
    return _build(
        t,
        contract(t),
        [
            *_not_null("item_id", "level", "cluster_id"),
            *_levels(p),
            Check(
                "unique_item_level",
                E.ExpectCompoundColumnsToBeUnique(column_list=["item_id", "level"]),
                description="an item is assigned at most once per level",
            ),
        ],
        [
            _violation(
                "item_exists",
                f"""
                select ic.* from {t} as ic
                where not exists (select 1 from {items} as i where i.item_id = ic.item_id)
                """,
                f"every item_id exists in {items}",
                (items,),
            ),
            _violation(
                "every_item_assigned_at_every_level",
                f"""
                with levels(level) as (values {levels})
                select i.item_id, levels.level from {items} as i cross join levels
                where not exists (
                    select 1 from {t} as ic where ic.item_id = i.item_id and ic.level = levels.level
                )
                order by levels.level, i.item_id
                """,
                f"every item of {items} is assigned at every level",
                (items,),
            ),
            _violation(
                "cluster_exists",
                f"""
                select ic.* from {t} as ic
                where not exists (select 1 from {c} as c where c.level = ic.level and c.cluster_id = ic.cluster_id)
                """,
                f"(level, cluster_id) exists in {c}",
                (c,),
            ),
            _violation(
                "nested_in_parent_cluster",
                f"""
                select fine.item_id, fine.level, fine.cluster_id, c.parent_cluster_id,
                       up.cluster_id as cluster_id_one_level_up
                from {t} as fine
                join {c} as c on c.level = fine.level and c.cluster_id = fine.cluster_id
                join {t} as up on up.item_id = fine.item_id and up.level = fine.level - 1
                where fine.level > {coarse} and c.parent_cluster_id is distinct from up.cluster_id
                """,
                "an item's cluster one level up is its cluster's parent",
                (c,),
            ),
        ],
    )


def _lookup_suite(table: str, p: Params, keys: tuple[str, ...]) -> Suite:
    """A lookup table: per ``keys`` (level, k and maybe policy) and history, ranked
    novel clusters with scores; every ordered history of the LLM level and K covered."""
    c, nte = config.CLUSTERS, config.NOVEL_TRANSITION_EXAMPLES
    key_list = ", ".join(keys)
    if p.llm_histories in ("observed", "evaluated"):
        # the same sets as models_ml.llm.pipeline.lookup_histories
        rows = "" if p.llm_histories == "observed" else " and (split = 'eval' or fold = 'validation')"
        expected = f"""histories as (
                    select distinct cast(history as bigint[]) as history, {p.history_len} as depth from {nte}
                    where level = {p.llm_level} and k = {p.history_len}{rows}
                )"""
        which = "" if p.llm_histories == "observed" else " (eval split and validation fold)"
        expected_what = f"every history of {nte}{which} at level {p.llm_level}, k={p.history_len}"
        expected_needs = (c, nte)
    else:
        expected = f"""level_clusters as (
                    select cast(cluster_id as bigint) as cluster_id from {c} where level = {p.llm_level}
                ), histories(history, depth) as (
                    select [cluster_id], 1 from level_clusters
                    union all
                    select list_append(h.history, lc.cluster_id), h.depth + 1
                    from histories as h
                    join level_clusters as lc on not list_contains(h.history, lc.cluster_id)
                    where h.depth < {p.history_len}
                )"""
        expected_what = f"every ordered history of k={p.history_len} distinct level-{p.llm_level} clusters"
        expected_needs = (c,)
    extra = {"policy": STR} if "policy" in keys else {}
    by_policy = "policy" in keys
    return _build(
        table,
        contract(table),
        [
            *_not_null(*extra, "level", "k", "history", "rank", "next_cluster_id", "score", "model_version"),
            *_levels(p),
            *_not_blank("model_version"),
            Check("k_positive", E.ExpectColumnValuesToBeBetween(column="k", min_value=1)),
            Check("rank_in_range", E.ExpectColumnValuesToBeBetween(column="rank", min_value=1, max_value=p.top_m)),
            Check("score_in_unit_interval", E.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1)),
            Check(
                "unique_history_rank",
                E.ExpectCompoundColumnsToBeUnique(column_list=[*keys, "history_key", "rank"]),
            ),
            Check(
                "unique_history_next",
                E.ExpectCompoundColumnsToBeUnique(column_list=[*keys, "history_key", "next_cluster_id"]),
                description="a novel cluster is listed once per history",
            ),
        ],
        [
            *_history_violations(table, p, "returned as its own novel interest"),
            *_ranking_violations(table, f"{key_list}, history", "ranks of each history are 1..m"),
            _violation(
                "every_history_covered",
                f"""
                with recursive {expected}, owners as (
                    select distinct {"policy" if by_policy else "'lookup' as policy"} from {table}
                    where level = {p.llm_level} and k = {p.history_len}
                ), covered as (
                    select distinct {"policy" if by_policy else "'lookup' as policy"},
                        cast(history as bigint[]) as history from {table}
                    where level = {p.llm_level} and k = {p.history_len}
                )
                select {"o.policy, " if by_policy else ""}{p.llm_level} as level, {p.history_len} as k, h.history
                from histories as h cross join {"owners" if by_policy else "(select 'lookup' as policy)"} as o
                where h.depth = {p.history_len}
                  and not exists (
                      select 1 from covered where covered.policy = o.policy and covered.history = h.history
                  )
                order by all
                """,
                f"{expected_what} has a row" + (" for every policy" if by_policy else ""),
                expected_needs,
            ),
        ],
        table_sql=f"select *, cast(history as varchar) as history_key from {table}",
    )


def novel_interest_transitions_suite(p: Params, existing: frozenset[str] = frozenset()) -> Suite:
    return _lookup_suite(config.NOVEL_INTEREST_TRANSITIONS, p, ("level", "k"))


def policy_lookups_suite(p: Params, existing: frozenset[str] = frozenset()) -> Suite:
    return _lookup_suite(config.POLICY_LOOKUPS, p, ("policy", "level", "k"))


def recommendations_suite(p: Params, existing: frozenset[str] = frozenset()) -> Suite:
    t, ic, items = config.RECOMMENDATIONS, config.ITEM_CLUSTERS, config.RAW_ITEMS
    return _build(
        t,
        contract(t),
        [
            *_not_null("policy", "user_id", "rank", "item_id", "cluster_id", "score"),
            Check("policy_in_set", E.ExpectColumnValuesToBeInSet(column="policy", value_set=list(config.POLICIES))),
            Check("rank_in_range", E.ExpectColumnValuesToBeBetween(column="rank", min_value=1, max_value=p.slate_size)),
            Check(
                "score_finite",
                E.ExpectColumnValuesToBeBetween(column="score", min_value=-FINITE_MAX, max_value=FINITE_MAX),
            ),
            Check(
                "explore_has_target_cluster",
                E.ExpectColumnValuesToNotBeNull(
                    column="target_cluster_id", row_condition=Column("policy") == "explore"
                ),
            ),
            Check(
                "unique_policy_user_rank",
                E.ExpectCompoundColumnsToBeUnique(column_list=["policy", "user_id", "rank"]),
            ),
            Check(
                "unique_policy_user_item",
                E.ExpectCompoundColumnsToBeUnique(column_list=["policy", "user_id", "item_id"]),
            ),
        ],
        [
            *_ranking_violations(t, "policy, user_id", "ranks of each slate are 1..k"),
            _violation(
                "item_exists",
                f"select r.* from {t} as r where not exists (select 1 from {items} as i where i.item_id = r.item_id)",
                f"every item_id exists in {items}",
                (items,),
            ),
            _violation(
                "user_exists",
                f"""
                select r.* from {t} as r where not exists (
                    select 1 from {config.RAW_INTERACTIONS} as i
                    where cast(i.user_id as varchar) = cast(r.user_id as varchar)
                )
                """,
                f"every user_id has interactions in {config.RAW_INTERACTIONS}",
                (config.RAW_INTERACTIONS,),
            ),
            _violation(
                "cluster_id_is_item_cluster",
                f"""
                select r.*, ic.cluster_id as item_cluster_id from {t} as r
                left join {ic} as ic on ic.item_id = r.item_id and ic.level = {p.llm_level}
                where r.cluster_id is distinct from ic.cluster_id
                """,
                f"cluster_id is the item's level-{p.llm_level} cluster",
                (ic,),
            ),
            _violation(
                "explore_item_in_target_cluster",
                f"""
                select r.*, ic.cluster_id as item_cluster_id from {t} as r
                left join {ic} as ic on ic.item_id = r.item_id and ic.level = {p.llm_level}
                where r.policy = 'explore' and ic.cluster_id is distinct from r.target_cluster_id
                """,
                "explore items lie in the target (novel) cluster",
                (ic,),
            ),
            _consumed_violation(p, existing),
        ],
    )


def _consumed_violation(p: Params, existing: frozenset[str]):
    # The positive flag's one home is dbt's stg_interactions; before dbt has run,
    # fall back to the raw table with the same threshold (dbt var positive_threshold).
    if config.STG_INTERACTIONS in existing:
        source, requires = config.STG_INTERACTIONS, config.STG_INTERACTIONS
        positives = f"select user_id, item_id from {source} where is_positive"
    else:
        source, requires = f"{config.RAW_INTERACTIONS}, engagement >= {p.positive_threshold}", config.RAW_INTERACTIONS
        positives = f"select user_id, item_id from {requires} where engagement >= {p.positive_threshold}"
    return _violation(
        "no_consumed_item_recommended",
        f"""
        with positives as ({positives})
        select r.* from {config.RECOMMENDATIONS} as r
        where exists (
            select 1 from positives as pos
            where cast(pos.user_id as varchar) = cast(r.user_id as varchar)
              and cast(pos.item_id as varchar) = cast(r.item_id as varchar)
        )
        order by r.policy, r.user_id, r.rank
        """,
        f"no item the user already consumed positively ({source}) is recommended",
        (requires,),
    )


SUITE_BUILDERS = {
    config.RAW_INTERACTIONS: interactions_suite,
    config.RAW_ITEMS: items_suite,
    config.CLUSTERS: clusters_suite,
    config.ITEM_CLUSTERS: item_clusters_suite,
    config.NOVEL_INTEREST_TRANSITIONS: novel_interest_transitions_suite,
    config.POLICY_LOOKUPS: policy_lookups_suite,
    config.RECOMMENDATIONS: recommendations_suite,
}
# Tables with a suite, in pipeline order.
TABLES = tuple(SUITE_BUILDERS)


def build_suite(table: str, params: Params | None = None, existing: frozenset[str] = frozenset()) -> Suite:
    """The suite for ``table`` (one of :data:`TABLES`); ``existing`` is the set of
    tables in the warehouse, used to pick sources that may not be built yet."""
    table = resolve_table(table)
    return SUITE_BUILDERS[table](params or Params.from_config(), frozenset(existing))


def resolve_table(name: str) -> str:
    """Accept 'ml.clusters' or 'clusters'."""
    if name in SUITE_BUILDERS:
        return name
    matches = [t for t in SUITE_BUILDERS if t.rpartition(".")[2] == name]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"no expectation suite for table {name!r}; suites exist for: {', '.join(TABLES)}")
