{#-
    UCI@N: per user, level and window, the number of distinct clusters in which the
    user has at least N positive events. Windows are tumbling, var('uci_window_days')
    days long and aligned to the Unix epoch: window i covers
    [1970-01-01 + i*W days, 1970-01-01 + (i+1)*W days), so they never depend on the data.
    window_end is the exclusive end. Every user with a positive event in a window gets a
    row for every N in var('uci_ns'), with uci = 0 where no cluster reaches N.
-#}
{%- set window_days = var('uci_window_days') | int -%}
{%- set ns = var('uci_ns') -%}

with

events as (

    select
        user_id,
        level,
        cluster_id,
        event_ts

    from {{ ref('int_positive_cluster_events') }}

),

windowed as (

    select
        user_id,
        level,
        cluster_id,
        cast(floor(
            {{ ie_epoch_days('event_ts') }} * 1.0 / {{ window_days }}
        ) as {{ dbt.type_int() }}) as window_index

    from events

),

cluster_counts as (

    select
        user_id,
        level,
        window_index,
        cluster_id,
        count(*) as n_positive

    from windowed

    group by user_id, level, window_index, cluster_id

),

per_window as (

    select
        user_id,
        level,
        window_index,
        {%- for n in ns %}
        sum(case when n_positive >= {{ n | int }} then 1 else 0 end) as uci_{{ loop.index }}{{ "," if not loop.last }}
        {%- endfor %}

    from cluster_counts

    group by user_id, level, window_index

),

windows as (

    -- window bounds computed once per user window, before the fan-out to N values
    select
        *,
        {{ ie_epoch_day_start('window_index * ' ~ window_days) }} as window_start,
        {{ ie_epoch_day_start('(window_index + 1) * ' ~ window_days) }} as window_end

    from per_window

),

ns as (

    {%- for n in ns %}
    select {{ loop.index }} as n_index, {{ n | int }} as n{{ " union all" if not loop.last }}
    {%- endfor %}

),

final as (

    -- one scan of the user windows: a cross join with the N values, not one union
    -- branch per N
    select
        windows.user_id,
        windows.level,
        windows.window_start,
        windows.window_end,
        ns.n,
        cast(
            case ns.n_index
                {%- for n in ns %}
                when {{ loop.index }} then windows.uci_{{ loop.index }}
                {%- endfor %}
            end
            as {{ dbt.type_int() }}
        ) as uci

    from windows

    cross join ns

)

select * from final
