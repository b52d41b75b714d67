with

source as (

    select * from {{ source('ml', 'recommendations') }}

),

renamed as (

    select
        policy,
        user_id,
        rank,
        item_id,
        cluster_id,
        score

    from source

)

select * from renamed
