with

source as (

    select * from {{ source('ml', 'clusters') }}

),

renamed as (

    select
        level,
        cluster_id,
        parent_cluster_id,
        description,
        n_items

    from source

)

select * from renamed
