-- A user's positive events in time order (ties broken by item_id) mapped to clusters,
-- consecutive repeats of a cluster collapsed into one position.
-- Speed: runs are read off their boundary rows (first and last event of a run) instead
-- of grouping every event.
with

mapped as (

    select * from {{ ref('int_positive_cluster_events') }}

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
        sum(case when starts_run then 1 else 0 end) over (
            partition by user_id, level
            order by event_pos
            rows between unbounded preceding and current row
        ) as seq_pos,
        -- no frame here: a frame on lead() is an error on Spark
        lead(event_pos) over run_order as next_boundary_pos,
        lead(event_ts) over run_order as next_boundary_ts

    from flagged

    where starts_run or ends_run

    window run_order as (partition by user_id, level order by event_pos)

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
