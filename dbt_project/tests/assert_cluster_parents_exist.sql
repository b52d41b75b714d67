-- Level 1 clusters have no parent; a cluster at level L > 1 has a parent at level L - 1.
with

clusters as (

    select * from {{ ref('stg_clusters') }}

),

min_level as (

    select min(level) as level from clusters

)

select child.*

from clusters as child

cross join min_level

where
    (child.level = min_level.level and child.parent_cluster_id is not null)
    or (
        child.level > min_level.level
        and not exists (
            select 1
            from clusters as parent
            where parent.level = child.level - 1
                and parent.cluster_id = child.parent_cluster_id
        )
    )
