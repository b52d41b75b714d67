-- A user's positive events (engagement >= var positive_threshold), before any cluster
-- mapping: the one place the positive filter is applied.
-- Every mart reads this model, so these refs make `dbt build` run the integrity tests of
-- the catalog and clusters (relationships to stg_items, assert_every_item_clustered_at_
-- every_level) before any mart, and skip the marts when one fails:
-- depends_on: {{ ref('stg_items') }}
-- depends_on: {{ ref('stg_clusters') }}
with

interactions as (

    select * from {{ ref('stg_interactions') }}

),

positives as (

    select
        user_id,
        item_id,
        event_ts

    from interactions

    where is_positive

)

select * from positives
