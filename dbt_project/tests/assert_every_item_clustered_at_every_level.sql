-- Every catalog item has a cluster at every level: the marts inner-join events to
-- clusters, so an unclustered item would drop its events without notice.
with

items as (

    select item_id from {{ ref('stg_items') }}

),

levels as (

    select distinct level from {{ ref('stg_clusters') }}

),

item_clusters as (

    select * from {{ ref('stg_item_clusters') }}

)

select
    items.item_id,
    levels.level

from items

cross join levels

left join item_clusters
    on items.item_id = item_clusters.item_id
    and levels.level = item_clusters.level

where item_clusters.item_id is null
