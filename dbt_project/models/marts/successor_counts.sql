{#-
    The classic count baseline as a table: where train-split users went next. For every
    (level, k) of novel_transition_examples, three contexts of counts:
      history      - the full history of K clusters ("liked A then B, then went to C"),
      last_cluster - the history's last cluster alone (history = [B]), the first back-off,
      all          - no context (history = []), popularity of the next cluster.
    n_train counts every train example, n_fit only the 'fit' fold (weights are chosen by
    fitting on n_fit and scoring the 'validation' fold); share = n_train / the context's
    total. Eval examples never count.
-#}
{%- set k = var('k') | int -%}

with

examples as (

    select
        level,
        k,
        history,
        {{ ie_list_element('history', k) }} as last_cluster_id,
        next_cluster_id,
        fold

    from {{ ref('novel_transition_examples') }}

    where split = 'train'

),

by_history as (

    select
        level,
        k,
        'history' as context,
        history,
        next_cluster_id,
        cast(count(*) as bigint) as n_train,
        cast(sum(case when fold = 'fit' then 1 else 0 end) as bigint) as n_fit

    from examples

    group by level, k, history, next_cluster_id

),

by_last_cluster as (

    select
        level,
        k,
        'last_cluster' as context,
        {{ ie_list(['last_cluster_id']) }} as history,
        next_cluster_id,
        cast(count(*) as bigint) as n_train,
        cast(sum(case when fold = 'fit' then 1 else 0 end) as bigint) as n_fit

    from examples

    group by level, k, last_cluster_id, next_cluster_id

),

overall as (

    select
        level,
        k,
        'all' as context,
        {{ ie_empty_int_list() }} as history,
        next_cluster_id,
        cast(count(*) as bigint) as n_train,
        cast(sum(case when fold = 'fit' then 1 else 0 end) as bigint) as n_fit

    from examples

    group by level, k, next_cluster_id

),

unioned as (

    select * from by_history
    union all
    select * from by_last_cluster
    union all
    select * from overall

),

final as (

    select
        level,
        k,
        context,
        history,
        next_cluster_id,
        n_train,
        n_fit,
        cast(n_train as double) / sum(n_train) over (partition by level, k, context, history) as share

    from unioned

)

select * from final
