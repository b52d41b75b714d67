"""`python -m models_ml.cli.summary`: row counts of the warehouse and a few example
queries with their results (the last step of `make demo`). Exit codes: 0 ok, 1 empty
tables, 75 the warehouse stayed locked by a writer (IE_LOCK_TIMEOUT_S)."""

from __future__ import annotations

import sys

import polars as pl

from models_ml import config
from models_ml import warehouse as wh

# (title, tables it needs, sql). Kept to what a new user would try first.
EXAMPLE_QUERIES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "Largest fine interest clusters",
        (config.CLUSTERS,),
        f"""select cluster_id, description, n_items
from {config.CLUSTERS}
where level = {config.FINE_LEVEL}
order by n_items desc
limit 5""",
    ),
    (
        "Most frequent novel transitions at the LLM level (history -> next)",
        (config.NOVEL_TRANSITION_EXAMPLES, config.CLUSTERS),
        f"""with top as (
    select history, next_cluster_id, count(*) as examples
    from {config.NOVEL_TRANSITION_EXAMPLES}
    where level = {config.llm_level()}
    group by all
    order by examples desc, next_cluster_id
    limit 5
), positions as (
    select *, generate_subscripts(history, 1) as pos from top
)
select string_agg(h.description, ' | ' order by p.pos) as history, n.description as next_cluster, p.examples
from positions p
join {config.CLUSTERS} h on h.level = {config.llm_level()} and h.cluster_id = p.history[p.pos]
join {config.CLUSTERS} n on n.level = {config.llm_level()} and n.cluster_id = p.next_cluster_id
group by p.history, n.description, p.examples
order by p.examples desc, next_cluster""",
    ),
    (
        "Average UCI@N per level",
        (config.UCI_AT_N,),
        f"""select level, n, round(avg(uci), 2) as avg_uci, count(*) as user_windows
from {config.UCI_AT_N}
group by level, n
order by level, n""",
    ),
    (
        "Training pairs per split",
        (config.TRAINING_PAIRS,),
        f"""select level, split, count(*) as pairs, count(distinct next_cluster_id) as labels
from {config.TRAINING_PAIRS}
group by level, split
order by level, split""",
    ),
    (
        "The LLM's novel-interest lookup table, read naturally",
        (config.TRANSITION_LOOKUP,),
        f"select * from {config.TRANSITION_LOOKUP} order by 1, 2, 3 limit 6",
    ),
    (
        "Where do people who liked A then B go next? (successor_counts, train split)",
        (config.SUCCESSOR_COUNTS, config.CLUSTERS),
        f"""with top as (
    select history, next_cluster_id, n_train, share
    from {config.SUCCESSOR_COUNTS}
    where level = {config.llm_level()} and context = 'history'
    order by n_train desc, history, next_cluster_id
    limit 5
)
select (select string_agg(c.description, ' | ' order by p.pos)
        from (select unnest(top.history) as cluster_id, generate_subscripts(top.history, 1) as pos) p
        join {config.CLUSTERS} c on c.level = {config.llm_level()} and c.cluster_id = p.cluster_id) as history,
       n.description as next_cluster, top.n_train, round(top.share, 3) as share
from top
join {config.CLUSTERS} n on n.level = {config.llm_level()} and n.cluster_id = top.next_cluster_id
order by top.n_train desc""",
    ),
    (
        "Does the shipped lookup meet its targets against the count tables? (lookup_verdict, recall@5)",
        (config.LOOKUP_VERDICT,),
        f"""select split_mode, target, round(llm_value, 3) as llm, baseline, round(baseline_value, 3) as baseline_value,
       round(diff, 3) as diff, round(ci_low, 3) as ci_low, round(ci_high, 3) as ci_high, met
from {config.LOOKUP_VERDICT}
where level = {config.llm_level()} and k = {config.history_len()} and coalesce(m, 5) = 5
order by split_mode, target""",
    ),
    (
        "Does the LLM beat the count table? (lookup_evaluation, eval split, 95% bootstrap intervals)",
        (config.LOOKUP_EVALUATION,),
        f"""select split_mode, policy, metric, round(value, 3) as value, round(ci_low, 3) as ci_low,
       round(ci_high, 3) as ci_high, n
from {config.LOOKUP_EVALUATION}
where level = {config.llm_level()} and k = {config.history_len()}
  and metric in ('recall_at_5', 'mrr', 'recall_at_5__seen_0', 'distinct_top1')
order by split_mode, metric, value desc""",
    ),
    (
        "Exploration metrics per policy",
        (config.EXPLORATION_METRICS,),
        f"select * from {config.EXPLORATION_METRICS} order by metric, policy",
    ),
]


def main() -> int:
    path = config.database_path()
    try:
        return _summary(path)
    except wh.WarehouseBusyError as exc:
        print(f"summary: {exc}", file=sys.stderr)
        return wh.EXIT_BUSY


def _summary(path) -> int:
    with wh.connect(path, read_only=True) as con:
        counts = wh.row_counts(con)
        print(f"\nWarehouse: {path}\n")
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_hide_dataframe_shape=True, tbl_width_chars=160):
            print(pl.DataFrame({"table": list(counts), "rows": list(counts.values())}))
            for title, needs, sql in EXAMPLE_QUERIES:
                if not all(wh.table_exists(con, t) for t in needs):
                    continue
                print(f"\n-- {title}\n{sql};")
                print(wh.query(con, sql))
    empty = [t for t, n in counts.items() if n == 0 and t != config.RAW_REJECTED_ROWS]
    if empty:
        print(f"\nEMPTY TABLES: {', '.join(empty)}", file=sys.stderr)
        return 1
    print("\nQuery it yourself: duckdb", path, "  or  python -c \"import duckdb; ...\" (see README)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
