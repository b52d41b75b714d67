-- A user's positive events in time order (ties broken by item_id) mapped to clusters,
-- consecutive repeats of a cluster collapsed into one position (gaps and islands).
with

events as (

    select * from {{ ref('int_positive_cluster_events') }}

),

flagged as (

    select
        user_id,
        level,
        cluster_id,
        event_ts,
        case
            when cluster_id = lag(cluster_id) over user_timeline then 0
            else 1
        end as starts_run,
        item_id

    from events

    window user_timeline as (partition by user_id, level order by event_ts, item_id)

),

numbered as (

    select
        user_id,
        level,
        cluster_id,
        event_ts,
        cast(sum(starts_run) over (
            partition by user_id, level
            order by event_ts, item_id
            rows between unbounded preceding and current row
        ) as {{ dbt.type_int() }}) as seq_pos

    from flagged

),

collapsed as (

    select
        user_id,
        level,
        seq_pos,
        min(cluster_id) as cluster_id,
        min(event_ts) as first_ts,
        max(event_ts) as last_ts,
        count(*) as n_events

    from numbered

    group by user_id, level, seq_pos

)

select * from collapsed
