{#-
    The novel-interest lookup table for SQL users: ml.novel_interest_transitions (one
    row per history x rank, written by the llm asset group) with the descriptions of the
    history's clusters (oldest first) and of the suggested cluster joined in.
    Left joins: a lookup row whose cluster is missing from ml.clusters keeps a null
    description, which the not_null tests report (a stale lookup), never a dropped row.
-#}
with

transitions as (

    select * from {{ ref('stg_novel_interest_transitions') }}

),

clusters as (

    select
        level,
        cluster_id,
        description

    from {{ ref('stg_clusters') }}

),

histories as (

    select distinct
        level,
        k,
        history

    from transitions

),

history_members as (

    select
        histories.level,
        histories.k,
        histories.history,
        members.cluster_id,
        members.position

    from histories
    {{ ie_unnest_with_position('histories.history', 'members', 'cluster_id', 'position') }}

),

described_histories as (

    select
        history_members.level,
        history_members.k,
        history_members.history,
        {{ ie_list_agg('clusters.description', 'history_members.position') }} as history_descriptions,
        count(clusters.description) as n_described

    from history_members
    left join clusters
        on clusters.level = history_members.level
        and clusters.cluster_id = history_members.cluster_id

    group by history_members.level, history_members.k, history_members.history

),

final as (

    select
        transitions.level,
        transitions.k,
        transitions.history,
        case
            when described_histories.n_described = transitions.k
                then described_histories.history_descriptions
        end as history_descriptions,
        transitions.rank,
        transitions.next_cluster_id,
        clusters.description as next_description,
        transitions.score,
        transitions.model_version

    from transitions
    left join described_histories
        on described_histories.level = transitions.level
        and described_histories.k = transitions.k
        and described_histories.history = transitions.history
    left join clusters
        on clusters.level = transitions.level
        and clusters.cluster_id = transitions.next_cluster_id

)

select * from final
