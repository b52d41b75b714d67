-- A user's positive events (engagement >= var positive_threshold), before any cluster
-- mapping: the one place the positive filter is applied.
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
