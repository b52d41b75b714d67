{#-
    Does the shipped LLM lookup beat the count tables? The targets every lookup here is
    held to, read off lookup_evaluation for each (level, k, split_mode) it holds and each
    recall@m it reports (definitions: the YAML). The count policies are var
    count_policies, those evaluated; the best is the one with the highest value on the
    metric, ties by name.
-#}
{{ config(tags=['evaluation']) }}
{%- set ms = var('recall_ms') -%}
{%- set thin = ie_thin_segment() | trim -%}

with

evaluation as (

    select * from {{ ref('lookup_evaluation') }}

),

recall_targets as (

    -- one row per target and m: the llm metric it reads and the diff rows' suffix
    {%- for m in ms %}
    select {{ m }} as m, 'recall_at_least_best_count' as target, 'recall_at_{{ m }}' as metric, '' as suffix
    union all
    select {{ m }} as m, 'thin_above_every_count' as target, 'recall_at_{{ m }}__{{ thin }}' as metric, '__{{ thin }}' as suffix
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

),

llm as (

    select * from evaluation where policy = 'llm'

),

count_ranked as (

    select
        level,
        k,
        split_mode,
        metric,
        policy,
        value,
        row_number() over (partition by level, k, split_mode, metric order by value desc, policy) as place

    from evaluation

    where policy in ({% for p in var('count_policies') %}'{{ p }}'{{ ', ' if not loop.last }}{% endfor %})

),

best_count as (

    select * from count_ranked where place = 1

),

recall_verdicts as (

    select
        llm.level,
        llm.k,
        llm.split_mode,
        recall_targets.target,
        recall_targets.m,
        llm.metric,
        llm.value as llm_value,
        best_count.policy as baseline,
        best_count.value as baseline_value,
        diff.value as diff,
        diff.ci_low,
        diff.ci_high,
        case
            -- at least the best: the paired interval of the difference not wholly below zero
            when recall_targets.target = 'recall_at_least_best_count' then diff.ci_high >= 0
            -- above every count policy: strictly above the best of them
            else diff.value > 0
        end as met,
        llm.n,
        llm.model_version

    from recall_targets

    inner join llm
        on llm.metric = recall_targets.metric

    inner join best_count
        on best_count.level = llm.level
        and best_count.k = llm.k
        and best_count.split_mode = llm.split_mode
        and best_count.metric = llm.metric

    inner join llm as diff
        on diff.level = llm.level
        and diff.k = llm.k
        and diff.split_mode = llm.split_mode
        and diff.metric = 'diff_recall_at_' || cast(recall_targets.m as {{ dbt.type_string() }})
            || '_vs_' || best_count.policy || recall_targets.suffix

),

top1_verdicts as (

    select
        llm.level,
        llm.k,
        llm.split_mode,
        'distinct_top1_at_least_markov' as target,
        cast(null as integer) as m,
        llm.metric,
        llm.value as llm_value,
        markov.policy as baseline,
        markov.value as baseline_value,
        llm.value - markov.value as diff,
        cast(null as double) as ci_low,
        cast(null as double) as ci_high,
        llm.value >= markov.value as met,
        llm.n,
        llm.model_version

    from llm

    inner join evaluation as markov
        on markov.level = llm.level
        and markov.k = llm.k
        and markov.split_mode = llm.split_mode
        and markov.metric = llm.metric
        and markov.policy = 'markov'

    where llm.metric = 'distinct_top1'

),

final as (

    select * from recall_verdicts

    union all

    select * from top1_verdicts

)

select * from final
