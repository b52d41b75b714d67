{#-
    At position t of a user's collapsed cluster sequence the history is the user's last
    K distinct clusters before t (oldest first) and the label is the cluster at t.
    K <= 2 is exact with lags: after collapsing, positions t-2 and t-1 always differ.
    K > 2 looks back var('history_lookback') positions and keeps each cluster's most
    recent occurrence; a user whose last K distinct clusters lie further back than that
    gets no example at t.
-#}
{%- set k = var('k') | int -%}
{%- set mode = var('novelty_mode') -%}
{%- if mode not in ('strict', 'local') -%}
    {{ exceptions.raise_compiler_error("var novelty_mode must be 'strict' or 'local', got '" ~ mode ~ "'") }}
{%- endif -%}
{%- if k < 1 -%}
    {{ exceptions.raise_compiler_error("var k must be >= 1, got " ~ k) }}
{%- endif -%}
{%- set lookback = k if k <= 2 else [var('history_lookback') | int, k] | max -%}

with

sequences as (

    select
        user_id,
        level,
        seq_pos,
        cluster_id,
        first_ts,
        n_events

    from {{ ref('user_cluster_sequences') }}

),

with_context as (

    select
        user_id,
        level,
        seq_pos,
        cluster_id,
        first_ts,
        n_events,
        {%- for i in range(lookback, 0, -1) %}
        lag(cluster_id, {{ i }}) over user_timeline as prev_{{ i }}{{ "," if not loop.last }}
        {%- endfor %}

    from sequences

    window user_timeline as (partition by user_id, level order by seq_pos)

),

{%- if mode == 'strict' %}

first_visits as (

    -- where the user first consumed each cluster; a group by + join is cheaper here
    -- than a second window sort
    select
        user_id,
        level,
        cluster_id,
        min(seq_pos) as first_seq_pos

    from sequences

    group by user_id, level, cluster_id

),
{%- endif %}

with_history as (

    select
        with_context.user_id,
        with_context.level,
        with_context.seq_pos,
        with_context.cluster_id,
        with_context.first_ts,
        with_context.n_events,
        {%- set prevs = [] -%}
        {%- for i in range(lookback, 0, -1) -%}{%- do prevs.append('prev_' ~ i) -%}{%- endfor %}
        {%- if k <= 2 %}
        case when prev_{{ k }} is not null then {{ ie_list(prevs) }} end as history
        {%- else %}
        {{ ie_last_distinct(ie_list(prevs), k) }} as history
        {%- endif %}

    from with_context
    {%- if mode == 'strict' %}

    -- strict: the label was never consumed before t, i.e. t is its first visit
    inner join first_visits
        on with_context.user_id = first_visits.user_id
        and with_context.level = first_visits.level
        and with_context.cluster_id = first_visits.cluster_id
        and with_context.seq_pos = first_visits.first_seq_pos
    {%- endif %}

),

examples as (

    select
        user_id,
        level,
        {{ k }} as k,
        history,
        cluster_id as next_cluster_id,
        first_ts as event_ts,
        seq_pos,
        -- engagement after the move: positive events of the run the transition starts
        n_events as next_events

    from with_history

    where history is not null
        and {{ ie_list_length('history') }} = {{ k }}
        {%- if mode == 'local' %}
        -- local: the label is only outside the history
        and not {{ ie_list_contains('history', 'cluster_id') }}
        {%- endif %}

),

{%- set split_mode = var('split_mode') -%}
{%- if split_mode not in ('user', 'time') -%}
    {{ exceptions.raise_compiler_error("var split_mode must be 'user' or 'time', got '" ~ split_mode ~ "'") }}
{%- endif %}
{%- if split_mode == 'time' %}

cutoff as (

    -- the refresh time: examples after it are the future the lookup is served on
    select {{ ie_quantile_disc('event_ts', 1 - var('eval_share') | float) }} as cutoff_ts

    from examples

),
{%- endif %}

split as (

    select
        examples.*,
        '{{ split_mode }}' as split_mode,
        {%- if split_mode == 'user' %}
        -- split by user: all of a user's examples land on the same side
        case
            when {{ ie_hash_unit(['user_id', var('seed') | int]) }} < {{ var('eval_share') }} then 'eval'
            else 'train'
        end as split
        {%- else %}
        -- split by time: every example after the cut-off is eval, whoever the user
        case when examples.event_ts > cutoff.cutoff_ts then 'eval' else 'train' end as split
        {%- endif %}

    from examples
    {%- if split_mode == 'time' %}
    cross join cutoff
    {%- endif %}

),

folded as (

    select
        *,
        -- train users held out to choose weights (count smoothing, fusion), never eval
        case
            when split = 'eval' then null
            when {{ ie_hash_unit(['user_id', (var('seed') | int) + 1]) }} < {{ var('validation_share') }}
                then 'validation'
            else 'fit'
        end as fold

    from split

)

select * from folded
