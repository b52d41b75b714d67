with

source as (

    select * from {{ source('ml', 'novel_interest_transitions') }}

),

renamed as (

    select
        level,
        k,
        history,
        rank,
        next_cluster_id,
        score,
        model_version

    from source

)

select * from renamed
