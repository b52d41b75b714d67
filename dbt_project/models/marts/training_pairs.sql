{#-
    Balanced training table. Within (level, k, split), each example gets a
    deterministic sampling key (hash of its ids + seed). Caps apply in this order:
      1. keep the max_per_history examples with the smallest key per history;
      2. of those, keep the max_per_label examples with the smallest key per label.
    Step 2 only removes rows, so both caps hold on the result.
-#}
with

examples as (

    select * from {{ ref('novel_transition_examples') }}

),

keyed as (

    select
        *,
        {{ ie_hash_unit(['user_id', 'level', 'k', 'seq_pos', var('seed') | int]) }} as sample_key

    from examples

),

history_ranked as (

    select
        *,
        row_number() over (
            partition by level, k, split, history
            order by sample_key, user_id, seq_pos
        ) as history_rank

    from keyed

),

history_capped as (

    select * from history_ranked

    where history_rank <= {{ var('max_per_history') | int }}

),

label_ranked as (

    select
        *,
        row_number() over (
            partition by level, k, split, next_cluster_id
            order by sample_key, user_id, seq_pos
        ) as label_rank

    from history_capped

),

final as (

    select
        level,
        k,
        history,
        next_cluster_id,
        split,
        fold,
        split_mode,
        user_id,
        event_ts,
        seq_pos,
        sample_key

    from label_ranked

    where label_rank <= {{ var('max_per_label') | int }}

)

select * from final
