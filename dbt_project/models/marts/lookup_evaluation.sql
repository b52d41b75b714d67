{#-
    Every lookup policy judged on the eval transitions of the LLM level (var level) and
    K (var k) under the current split (var split_mode). One row per (level, k,
    split_mode, policy, metric); runs of other K, levels or split modes keep their rows
    (incremental, replaced per (level, k, split_mode)). Metric definitions: the YAML.

    Intervals: 95% percentile bootstrap over eval users, var bootstrap_samples
    replicates; replicate b draws as many users as there are, with replacement, user
    index floor(hash_unit(b, i, seed) * U) + 1 for i = 1..U, so every policy is scored on
    the same draws and differences are paired.
-#}
{{ config(
    materialized='incremental',
    tags=['evaluation'],
    **ie_replace_by_keys(['level', 'k', 'split_mode'])
) }}
{%- set level = var('level') | int -%}
{%- set k = var('k') | int -%}
{%- set split_mode = var('split_mode') -%}
{%- set ms = var('recall_ms') -%}
{%- set bounds = var('history_seen_bounds') -%}
{%- set n_boot = var('bootstrap_samples') | int -%}
{%- set seed = var('seed') | int -%}
{%- set depth = var('lookup_depth') | int -%}
{%- set baselines = var('count_policies') + ['zero_shot', 'counts_alignment'] -%}
{%- set first = 'seen_0' if bounds[0] == 1 else 'seen_0_' ~ (bounds[0] - 1) -%}
{%- set segments = [first, 'seen_' ~ bounds[0] ~ '_' ~ (bounds[1] - 1), 'seen_' ~ bounds[1] ~ '_plus'] -%}
{#- the first two together: every history seen fewer than bounds[1] times, where counts are thin -#}
{%- set thin = ie_thin_segment() | trim -%}

with

transitions as (

    select
        user_id,
        history,
        next_cluster_id

    from {{ ref('novel_transition_examples') }}

    where split = 'eval'
        and level = {{ level }}
        and k = {{ k }}

),

clusters as (

    select cluster_id from {{ ref('stg_clusters') }} where level = {{ level }}

),

counts as (

    select * from {{ ref('successor_counts') }}

    where level = {{ level }}
        and k = {{ k }}

),

sequences as (

    select * from {{ ref('user_cluster_sequences') }} where level = {{ level }}

),

lookups as (

    -- every policy judged on its first var lookup_depth clusters, what the LLM stores
    select 'llm' as policy, history, rank, next_cluster_id, model_version
    from {{ ref('stg_novel_interest_transitions') }}
    where level = {{ level }} and k = {{ k }} and rank <= {{ depth }}

    union all

    select policy, history, rank, next_cluster_id, model_version
    from {{ ref('stg_policy_lookups') }}
    where level = {{ level }} and k = {{ k }} and rank <= {{ depth }}

    union all

    select policy, history, rank, next_cluster_id, model_version
    from {{ ref('count_lookups') }}
    where level = {{ level }} and k = {{ k }} and rank <= {{ depth }}

),

policies as (

    select
        policy,
        max(model_version) as model_version

    from lookups

    group by policy

),

-- guards: a clear error, and nothing written, instead of silently wrong figures

stale_lookup_rows as (

    select distinct lookups.policy, lookups.next_cluster_id

    from lookups

    where not exists (select 1 from clusters where clusters.cluster_id = lookups.next_cluster_id)

),

guard as (

    select coalesce(
        {{ ie_fail_if(
            "(select count(*) from transitions) = 0",
            "'lookup_evaluation: novel_transition_examples has no eval transitions at level " ~ level ~ ", k " ~ k ~ " (split_mode " ~ split_mode ~ ")'"
        ) }},
        {{ ie_fail_if(
            "(select count(*) from clusters) < " ~ (k + 1),
            "'lookup_evaluation: ml.clusters level " ~ level ~ " has ' || cast((select count(*) from clusters) as " ~ dbt.type_string() ~ ") || ' clusters; a history of k = " ~ k ~ " needs at least " ~ (k + 1) ~ "'"
        ) }},
        {{ ie_fail_if(
            "(select count(*) from stale_lookup_rows) > 0",
            "'lookup_evaluation: lookup rows at level " ~ level ~ " name clusters missing from ml.clusters: ' || (select string_agg(policy || ' -> ' || cast(next_cluster_id as " ~ dbt.type_string() ~ "), ', ') from (select * from stale_lookup_rows order by policy, next_cluster_id limit 5) as s) || '; re-run the lookups'"
        ) }},
        0
    ) as ok

),

-- per transition: where the true next cluster stands in each policy's list

history_seen as (

    select
        history,
        sum(n_train) as n_seen

    from counts

    where context = 'history'

    group by history

),

found as (

    select
        policies.policy,
        transitions.user_id,
        case
            when coalesce(history_seen.n_seen, 0) < {{ bounds[0] }} then '{{ segments[0] }}'
            when coalesce(history_seen.n_seen, 0) < {{ bounds[1] }} then '{{ segments[1] }}'
            else '{{ segments[2] }}'
        end as segment,
        lookups.rank

    from transitions

    cross join policies

    left join lookups
        on lookups.policy = policies.policy
        and lookups.history = transitions.history
        and lookups.next_cluster_id = transitions.next_cluster_id

    left join history_seen
        on history_seen.history = transitions.history

),

per_user as (

    -- each user's transitions per policy, overall ('all'), per history segment and on
    -- the thin segments together
    select
        policy,
        segment,
        user_id,
        count(*) as n,
        {%- for m in ms %}
        sum(case when rank <= {{ m }} then 1 else 0 end) as hits_{{ m }},
        {%- endfor %}
        sum(coalesce(cast(1 as double) / rank, 0.0)) as rr

    from (
        select policy, segment, user_id, rank from found
        union all
        select policy, 'all' as segment, user_id, rank from found
        union all
        select policy, '{{ thin }}' as segment, user_id, rank from found
        where segment in ('{{ segments[0] }}', '{{ segments[1] }}')
    ) as segmented

    group by policy, segment, user_id

),

point_estimates as (

    select
        policy,
        segment,
        sum(n) as n,
        {%- for m in ms %}
        cast(sum(hits_{{ m }}) as double) / sum(n) as recall_at_{{ m }},
        {%- endfor %}
        sum(rr) / sum(n) as mrr

    from per_user

    group by policy, segment

),

-- the bootstrap

users as (

    select
        user_id,
        row_number() over (order by user_id) as user_idx,
        count(*) over () as n_users

    from (select distinct user_id from transitions) as distinct_users

),

draws as (

    select
        replicates.i as replicate,
        cast(floor({{ ie_hash_unit(['replicates.i', 'users.user_idx', seed]) }} * users.n_users) as bigint) + 1 as drawn_idx

    from {{ ie_integers(n_boot) }} as replicates

    cross join users

),

drawn_users as (

    select
        draws.replicate,
        users.user_id,
        count(*) as multiplicity

    from draws

    inner join users
        on users.user_idx = draws.drawn_idx

    group by draws.replicate, users.user_id

),

replicate_estimates as (

    select
        drawn_users.replicate,
        per_user.policy,
        per_user.segment,
        {%- for m in ms %}
        cast(sum(drawn_users.multiplicity * per_user.hits_{{ m }}) as double)
            / sum(drawn_users.multiplicity * per_user.n) as recall_at_{{ m }},
        {%- endfor %}
        sum(drawn_users.multiplicity * per_user.rr) / sum(drawn_users.multiplicity * per_user.n) as mrr

    from drawn_users

    inner join per_user
        on per_user.user_id = drawn_users.user_id

    group by drawn_users.replicate, per_user.policy, per_user.segment

),

{%- set metric_names = [] -%}
{%- for m in ms -%}{%- do metric_names.append('recall_at_' ~ m) -%}{%- endfor -%}
{%- do metric_names.append('mrr') %}

accuracy_long as (

    {%- for metric in metric_names %}
    select
        point_estimates.policy,
        point_estimates.segment,
        '{{ metric }}' as base_metric,
        point_estimates.{{ metric }} as value,
        {{ ie_quantile_cont('replicate_estimates.' ~ metric, 0.025) }} as ci_low,
        {{ ie_quantile_cont('replicate_estimates.' ~ metric, 0.975) }} as ci_high,
        point_estimates.n

    from point_estimates

    left join replicate_estimates
        on replicate_estimates.policy = point_estimates.policy
        and replicate_estimates.segment = point_estimates.segment

    group by point_estimates.policy, point_estimates.segment, point_estimates.{{ metric }}, point_estimates.n
    {{ "union all" if not loop.last }}
    {%- endfor %}

),

paired_long as (

    -- the shipped lookup minus each baseline, on the same bootstrap draws
    {%- for metric in metric_names %}
    select
        'llm' as policy,
        ours_point.segment,
        '{{ metric }}' as base_metric,
        base_point.policy as baseline,
        ours_point.{{ metric }} - base_point.{{ metric }} as value,
        {{ ie_quantile_cont('ours.' ~ metric ~ ' - base.' ~ metric, 0.025) }} as ci_low,
        {{ ie_quantile_cont('ours.' ~ metric ~ ' - base.' ~ metric, 0.975) }} as ci_high,
        ours_point.n

    from point_estimates as ours_point

    inner join point_estimates as base_point
        on base_point.segment = ours_point.segment
        and base_point.policy in ({% for b in baselines %}'{{ b }}'{{ ", " if not loop.last }}{% endfor %})

    left join replicate_estimates as ours
        on ours.policy = 'llm'
        and ours.segment = ours_point.segment

    left join replicate_estimates as base
        on base.policy = base_point.policy
        and base.segment = base_point.segment
        and base.replicate = ours.replicate

    where ours_point.policy = 'llm'

    group by ours_point.segment, base_point.policy, ours_point.{{ metric }}, base_point.{{ metric }}, ours_point.n
    {{ "union all" if not loop.last }}
    {%- endfor %}

),

-- balance of the lookups over all histories (no eval data): the top-1 answers

covered_histories as (

    -- the histories the shipped lookup covers, or every policy's own without one
    select distinct history from lookups where policy = 'llm'

),

top1 as (

    select
        lookups.policy,
        lookups.next_cluster_id

    from lookups

    where lookups.rank = 1
        and (
            not exists (select 1 from covered_histories)
            or lookups.history in (select history from covered_histories)
        )

),

top1_counts as (

    select
        policies.policy,
        clusters.cluster_id,
        count(top1.next_cluster_id) as n_top1

    from policies

    cross join clusters

    left join top1
        on top1.policy = policies.policy
        and top1.next_cluster_id = clusters.cluster_id

    group by policies.policy, clusters.cluster_id

),

top1_ranked as (

    select
        *,
        row_number() over (partition by policy order by n_top1, cluster_id) as ascending_idx,
        count(*) over (partition by policy) as n_clusters,
        sum(n_top1) over (partition by policy) as n_histories

    from top1_counts

),

balance_long as (

    select
        policy,
        'all' as segment,
        'distinct_top1' as base_metric,
        cast(sum(case when n_top1 > 0 then 1 else 0 end) as double) as value,
        max(n_histories) as n

    from top1_ranked

    group by policy

    union all

    select
        policy,
        'all' as segment,
        'top1_entropy' as base_metric,
        -- normalised: 1 when every cluster is top-1 equally often
        -sum(case when n_top1 > 0 then (cast(n_top1 as double) / n_histories) * ln(cast(n_top1 as double) / n_histories) else 0 end)
            / ln(max(n_clusters)) as value,
        max(n_histories) as n

    from top1_ranked

    group by policy

    union all

    select
        policy,
        'all' as segment,
        'top1_gini' as base_metric,
        -- over every cluster of the level (never top-1 counts as 0); 0 = equal shares
        sum((2 * ascending_idx - n_clusters - 1) * cast(n_top1 as double))
            / (max(n_clusters) * nullif(sum(cast(n_top1 as double)), 0)) as value,
        max(n_histories) as n

    from top1_ranked

    group by policy

),

-- serving: can the lookup name a cluster the user has not consumed?

user_states as (

    select
        user_id,
        {{ ie_last_distinct(ie_list_agg('cluster_id', 'seq_pos'), k) }} as history,
        {{ ie_list_agg('distinct cluster_id', 'cluster_id') }} as consumed

    from sequences

    group by user_id

),

user_lookups as (

    select
        lookups.policy,
        user_states.user_id,
        max(case when not {{ ie_list_contains('user_states.consumed', 'lookups.next_cluster_id') }} then 1 else 0 end) as any_unconsumed,
        max(case when lookups.rank <= 5 and not {{ ie_list_contains('user_states.consumed', 'lookups.next_cluster_id') }} then 1 else 0 end) as unconsumed_in_top5

    from user_states

    inner join lookups
        on lookups.history = user_states.history

    where {{ ie_list_length('user_states.history') }} = {{ k }}

    group by lookups.policy, user_states.user_id

),

serving_long as (

    select
        policy,
        'all' as segment,
        'users_with_unconsumed_suggestion' as base_metric,
        avg(cast(any_unconsumed as double)) as value,
        count(*) as n

    from user_lookups

    group by policy

    union all

    select
        policy,
        'all' as segment,
        'users_with_unconsumed_in_top_5' as base_metric,
        avg(cast(unconsumed_in_top5 as double)) as value,
        count(*) as n

    from user_lookups

    group by policy

),

-- one row per (policy, metric)

rows_long as (

    select
        policy,
        base_metric || case when segment = 'all' then '' else '__' || segment end as metric,
        base_metric,
        value,
        ci_low,
        ci_high,
        n

    from accuracy_long

    union all

    select
        policy,
        'diff_' || base_metric || '_vs_' || baseline || case when segment = 'all' then '' else '__' || segment end as metric,
        base_metric,
        value,
        ci_low,
        ci_high,
        n

    from paired_long

    union all

    select policy, base_metric as metric, base_metric, value, null as ci_low, null as ci_high, n from balance_long

    union all

    select policy, base_metric as metric, base_metric, value, null as ci_low, null as ci_high, n from serving_long

),

final as (

    select
        {{ level }} as level,
        {{ k }} as k,
        '{{ split_mode }}' as split_mode,
        rows_long.policy,
        rows_long.metric,
        cast(rows_long.value as double) as value,
        cast(rows_long.ci_low as double) as ci_low,
        cast(rows_long.ci_high as double) as ci_high,
        cast(rows_long.n as bigint) as n,
        policies.model_version

    from rows_long

    inner join policies
        on policies.policy = rows_long.policy

    -- recall@m only where more than m + K clusters exist (else it is 1 for any policy)
    where (
        rows_long.base_metric not like 'recall_at_%'
        {%- for m in ms %}
        or (rows_long.base_metric = 'recall_at_{{ m }}' and (select count(*) from clusters) > {{ m + k }})
        {%- endfor %}
    )
        and (select ok from guard) = 0

)

select * from final
