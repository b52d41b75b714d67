with

source as (

    select * from {{ source('raw', 'interactions') }}

),

renamed as (

    select
        user_id,
        item_id,
        event_ts,
        engagement,
        -- the one definition of a positive interaction
        engagement >= {{ var('positive_threshold') }} as is_positive

    from source

)

select * from renamed
