with

source as (

    select * from {{ source('raw', 'items') }}

),

renamed as (

    select
        item_id,
        title,
        text

    from source

)

select * from renamed
