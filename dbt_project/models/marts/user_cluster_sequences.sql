-- A user's positive events in time order (ties broken by item_id) mapped to clusters,
-- consecutive repeats of a cluster collapsed into one position.
-- Speed: the timeline is sorted once per user before the fan-out to levels, so the
-- per-level windows order by an integer; runs are read off their boundary rows
-- (first and last event of a run) instead of grouping every event.
with

positives as (

    select * from {{ ref('int_positive_events') }}

),

item_clusters as (

    select * from {{ ref('stg_item_clusters') }}

),

timeline as (

    select
        user_id,
        item_id,
        event_ts,
        row_number() over (partition by user_id order by event_ts, item_id) as event_pos

    from positives

),

mapped as (

    -- inner join: every item has a cluster at every level (assert_every_item_clustered_at_every_level)
    select
        timeline.user_id,
        item_clusters.level,
        item_clusters.cluster_id,
        timeline.event_pos,
        timeline.event_ts

    from timeline

    inner join item_clusters
        on timeline.item_id = item_clusters.item_id

),

flagged as (

    select
        user_id,
        level,
        cluster_id,
        event_pos,
        event_ts,
        lag(cluster_id) over level_timeline is distinct from cluster_id as starts_run,
        lead(cluster_id) over level_timeline is distinct from cluster_id as ends_run

    from mapped

    window level_timeline as (partition by user_id, level order by event_pos)

),

boundaries as (

    -- a run's first event starts it, its last event ends it (one event can do both)
    select
        user_id,
        level,
        cluster_id,
        event_pos,
        event_ts,
        starts_run,
        ends_run,
        sum(case when starts_run then 1 else 0 end) over run_order as seq_pos,
        lead(event_pos) over run_order as next_boundary_pos,
        lead(event_ts) over run_order as next_boundary_ts

    from flagged

    where starts_run or ends_run

    window run_order as (
        partition by user_id, level
        order by event_pos
        rows between unbounded preceding and current row
    )

),

runs as (

    -- a start that does not also end its run is followed by the run's end
    select
        user_id,
        level,
        cast(seq_pos as {{ dbt.type_int() }}) as seq_pos,
        cluster_id,
        event_ts as first_ts,
        case when ends_run then event_ts else next_boundary_ts end as last_ts,
        cast(
            case when ends_run then 1 else next_boundary_pos - event_pos + 1 end
            as {{ dbt.type_int() }}
        ) as n_events

    from boundaries

    where starts_run

)

select * from runs
