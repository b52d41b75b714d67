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
        first_ts

    from {{ ref('user_cluster_sequences') }}

),

with_context as (

    select
        user_id,
        level,
        seq_pos,
        cluster_id,
        first_ts,
        {%- for i in range(lookback, 0, -1) %}
        lag(cluster_id, {{ i }}) over user_timeline as prev_{{ i }},
        {%- endfor %}
        -- the position where the user first consumed this cluster (strict novelty)
        min(seq_pos) over (partition by user_id, level, cluster_id) as first_seq_pos

    from sequences

    window user_timeline as (partition by user_id, level order by seq_pos)

),

with_history as (

    select
        user_id,
        level,
        seq_pos,
        cluster_id,
        first_ts,
        first_seq_pos,
        {%- set prevs = [] -%}
        {%- for i in range(lookback, 0, -1) -%}{%- do prevs.append('prev_' ~ i) -%}{%- endfor %}
        {%- if k <= 2 %}
        case when prev_{{ k }} is not null then {{ ie_list(prevs) }} end as history
        {%- else %}
        {{ ie_last_distinct(ie_list(prevs), k) }} as history
        {%- endif %}

    from with_context

),

examples as (

    select
        user_id,
        level,
        {{ k }} as k,
        history,
        cluster_id as next_cluster_id,
        first_ts as event_ts,
        seq_pos

    from with_history

    where history is not null
        and {{ ie_list_length('history') }} = {{ k }}
        {%- if mode == 'strict' %}
        -- strict: the label was never consumed before t
        and seq_pos = first_seq_pos
        {%- else %}
        -- local: the label is only outside the history
        and not {{ ie_list_contains('history', 'cluster_id') }}
        {%- endif %}

),

split as (

    select
        *,
        -- split by user: all of a user's examples land on the same side
        case
            when {{ ie_hash_unit(['user_id', var('seed') | int]) }} < {{ var('eval_share') }} then 'eval'
            else 'train'
        end as split

    from examples

)

select * from split
