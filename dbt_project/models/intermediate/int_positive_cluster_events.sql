-- A user's positive events mapped to their cluster at every level, with the event's
-- position in the user's timeline (ties in event_ts broken by item_id): the one join of
-- events to clusters, read by user_cluster_sequences, uci_at_n and exploration_metrics.
-- The timeline is numbered once per user before the fan-out to levels, so per-level
-- windows downstream order by an integer.
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

    -- inner join: ml.item_clusters has every item at every level (its Great Expectations
    -- gate every_item_assigned_at_every_level blocks this model otherwise), so no
    -- positive event is lost here
    select
        timeline.user_id,
        item_clusters.level,
        item_clusters.cluster_id,
        timeline.item_id,
        timeline.event_ts,
        timeline.event_pos

    from timeline

    inner join item_clusters
        on timeline.item_id = item_clusters.item_id

)

select * from mapped
