with

source as (

    select * from {{ source('ml', 'item_clusters') }}

),

renamed as (

    select
        item_id,
        level,
        cluster_id

    from source

)

select * from renamed
