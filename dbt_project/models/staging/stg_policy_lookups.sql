with

source as (

    select * from {{ source('ml', 'policy_lookups') }}

),

renamed as (

    select
        policy,
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
