{#-
    Exploration metrics per recommendation policy, at the LLM
    level var('level'). Grain: policy x metric.

    Only slates of users with at least one positive interaction are scored, so every
    policy is measured on the users the explore and baseline policies serve (cold users
    would give the popular policy a trivial novelty of 1).

    - novelty_rate: mean over slates of the share of items whose cluster the user never
      consumed positively.
    - distinct_clusters_per_slate: mean number of distinct clusters in a slate.
    - cluster_coverage: distinct recommended clusters / clusters with items at the level.
    - catalog_coverage: distinct recommended items / catalog items.
    - uci_gain@N: mean over slates of how much UCI@N over the user's whole positive
      history would grow if the user consumed the slate (each item one more positive
      event in its cluster): clusters whose count goes from below N to at least N.
-#}
{%- set ns = var('uci_ns') -%}

with

recommendations as (

    select
        policy,
        user_id,
        item_id,
        cluster_id

    from {{ ref('stg_recommendations') }}

),

positive_events as (

    select
        user_id,
        cluster_id

    from {{ ref('int_positive_cluster_events') }}

    where level = {{ var('level') }}

),

user_cluster_counts as (

    select
        user_id,
        cluster_id,
        count(*) as n_positive

    from positive_events

    group by user_id, cluster_id

),

scored_users as (

    select distinct user_id from positive_events

),

scored_recommendations as (

    select recommendations.*

    from recommendations

    inner join scored_users
        on recommendations.user_id = scored_users.user_id

),

slate_items as (

    select
        scored_recommendations.policy,
        scored_recommendations.user_id,
        scored_recommendations.item_id,
        scored_recommendations.cluster_id,
        case when user_cluster_counts.user_id is null then cast(1 as double) else cast(0 as double) end as is_novel

    from scored_recommendations

    left join user_cluster_counts
        on scored_recommendations.user_id = user_cluster_counts.user_id
        and scored_recommendations.cluster_id = user_cluster_counts.cluster_id

),

slates as (

    select
        policy,
        user_id,
        count(*) as n_items,
        avg(is_novel) as novelty_rate,
        count(distinct cluster_id) as n_clusters

    from slate_items

    group by policy, user_id

),

slate_cluster_counts as (

    select
        scored_recommendations.policy,
        scored_recommendations.user_id,
        scored_recommendations.cluster_id,
        count(*) as n_slate,
        coalesce(max(user_cluster_counts.n_positive), 0) as n_positive

    from scored_recommendations

    left join user_cluster_counts
        on scored_recommendations.user_id = user_cluster_counts.user_id
        and scored_recommendations.cluster_id = user_cluster_counts.cluster_id

    group by scored_recommendations.policy, scored_recommendations.user_id, scored_recommendations.cluster_id

),

uci_gains as (

    select
        policy,
        user_id,
        {%- for n in ns %}
        sum(case when n_positive < {{ n | int }} and n_positive + n_slate >= {{ n | int }} then 1 else 0 end)
            as uci_gain_{{ loop.index }}{{ "," if not loop.last }}
        {%- endfor %}

    from slate_cluster_counts

    group by policy, user_id

),

level_clusters as (

    select count(distinct cluster_id) as n_clusters

    from {{ ref('stg_item_clusters') }}

    where level = {{ var('level') }}

),

catalog as (

    select count(*) as n_items from {{ ref('stg_items') }}

),

per_policy as (

    select
        policy,
        count(distinct user_id) as n_slates,
        count(distinct cluster_id) as n_clusters_recommended,
        count(distinct item_id) as n_items_recommended

    from scored_recommendations

    group by policy

),

slate_means as (

    select
        slates.policy,
        avg(slates.n_items) as mean_slate_size,
        avg(slates.novelty_rate) as novelty_rate,
        avg(slates.n_clusters) as distinct_clusters_per_slate,
        {%- for n in ns %}
        avg(uci_gains.uci_gain_{{ loop.index }}) as uci_gain_{{ loop.index }}{{ "," if not loop.last }}
        {%- endfor %}

    from slates

    inner join uci_gains
        on slates.policy = uci_gains.policy
        and slates.user_id = uci_gains.user_id

    group by slates.policy

),

unpivoted as (

    select policy, 'n_slates' as metric, cast(n_slates as double) as value from per_policy
    union all
    select
        per_policy.policy,
        'cluster_coverage',
        cast(per_policy.n_clusters_recommended as double) / level_clusters.n_clusters
    from per_policy cross join level_clusters
    union all
    select
        per_policy.policy,
        'catalog_coverage',
        cast(per_policy.n_items_recommended as double) / catalog.n_items
    from per_policy cross join catalog
    union all
    select policy, 'mean_slate_size', mean_slate_size from slate_means
    union all
    select policy, 'novelty_rate', novelty_rate from slate_means
    union all
    select policy, 'distinct_clusters_per_slate', distinct_clusters_per_slate from slate_means
    {%- for n in ns %}
    union all
    select policy, 'uci_gain@{{ n | int }}', uci_gain_{{ loop.index }} from slate_means
    {%- endfor %}

),

final as (

    select
        policy,
        metric,
        cast(value as double) as value,
        {{ var('level') }} as level

    from unpivoted

)

select * from final
