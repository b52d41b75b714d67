-- A user's positive events mapped to their cluster at every level: input of UCI@N and
-- the exploration metrics (raw counts, no ordering needed).
with

positives as (

    select * from {{ ref('int_positive_events') }}

),

item_clusters as (

    select * from {{ ref('stg_item_clusters') }}

),

mapped as (

    -- inner join: every item has a cluster at every level (guarded by the data test
    -- assert_every_item_clustered_at_every_level), so no positive event is lost here
    select
        positives.user_id,
        item_clusters.level,
        item_clusters.cluster_id,
        positives.item_id,
        positives.event_ts

    from positives

    inner join item_clusters
        on positives.item_id = item_clusters.item_id

)

select * from mapped
