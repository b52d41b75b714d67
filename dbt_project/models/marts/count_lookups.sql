{#-
    The count baselines as lookups of the same shape as ml.novel_interest_transitions:
    for every ordered history of K distinct clusters at every level, every cluster
    outside the history, ranked (successor_counts, train split only):
      markov     - by the history's successor count, then (back-off) the last
                   cluster's successor count, then popularity, then cluster id;
      popularity - by how often train users moved to the cluster, then cluster id.
    score is normalised over the history's candidates and never increases with rank:
    markov's raw score n_history + n_last / (N_last + 1) + n_all / ((N_last + 1)(N_all + 1))
    orders exactly as the back-off (each lower term is worth less than one count of the
    term above); a history without any count gets uniform scores.
-#}
{%- set k = var('k') | int -%}

with

clusters as (

    select
        level,
        cluster_id

    from {{ ref('stg_clusters') }}

),

counts as (

    select * from {{ ref('successor_counts') }}

    where k = {{ k }}

),

histories as (

    select
        c1.level,
        {%- set members = [] -%}
        {%- for i in range(1, k + 1) -%}{%- do members.append('c' ~ i ~ '.cluster_id') -%}{%- endfor %}
        {{ ie_list(members) }} as history,
        c{{ k }}.cluster_id as last_cluster_id

    from clusters as c1
    {%- for i in range(2, k + 1) %}
    inner join clusters as c{{ i }}
        on c{{ i }}.level = c1.level
        {%- for j in range(1, i) %}
        and c{{ i }}.cluster_id <> c{{ j }}.cluster_id
        {%- endfor %}
    {%- endfor %}

),

candidates as (

    select
        histories.level,
        histories.history,
        histories.last_cluster_id,
        clusters.cluster_id as next_cluster_id

    from histories

    inner join clusters
        on clusters.level = histories.level

    where not {{ ie_list_contains('histories.history', 'clusters.cluster_id') }}

),

history_counts as (

    select level, history, next_cluster_id, n_train from counts where context = 'history'

),

last_counts as (

    select
        level,
        {{ ie_list_element('history', 1) }} as last_cluster_id,
        next_cluster_id,
        n_train,
        sum(n_train) over (partition by level, history) as last_total

    from counts

    where context = 'last_cluster'

),

all_counts as (

    select
        level,
        next_cluster_id,
        n_train,
        sum(n_train) over (partition by level) as all_total

    from counts

    where context = 'all'

),

counted as (

    select
        candidates.level,
        candidates.history,
        candidates.next_cluster_id,
        coalesce(history_counts.n_train, 0) as n_history,
        coalesce(last_counts.n_train, 0) as n_last,
        coalesce(all_counts.n_train, 0) as n_all,
        coalesce(max(last_counts.last_total) over (partition by candidates.level, candidates.history), 0) as last_total,
        coalesce(max(all_counts.all_total) over (partition by candidates.level), 0) as all_total

    from candidates

    left join history_counts
        on history_counts.level = candidates.level
        and history_counts.history = candidates.history
        and history_counts.next_cluster_id = candidates.next_cluster_id

    left join last_counts
        on last_counts.level = candidates.level
        and last_counts.last_cluster_id = candidates.last_cluster_id
        and last_counts.next_cluster_id = candidates.next_cluster_id

    left join all_counts
        on all_counts.level = candidates.level
        and all_counts.next_cluster_id = candidates.next_cluster_id

),

scored as (

    select
        level,
        history,
        next_cluster_id,
        n_history,
        n_last,
        n_all,
        n_history
            + cast(n_last as double) / (last_total + 1)
            + cast(n_all as double) / ((last_total + 1) * (all_total + 1)) as markov_raw,
        cast(n_all as double) as popularity_raw

    from counted

),

markov as (

    select
        'markov' as policy,
        level,
        history,
        next_cluster_id,
        row_number() over (
            partition by level, history
            order by n_history desc, n_last desc, n_all desc, next_cluster_id
        ) as rank,
        coalesce(
            markov_raw / nullif(sum(markov_raw) over (partition by level, history), 0),
            cast(1 as double) / count(*) over (partition by level, history)
        ) as score

    from scored

),

popularity as (

    select
        'popularity' as policy,
        level,
        history,
        next_cluster_id,
        row_number() over (partition by level, history order by n_all desc, next_cluster_id) as rank,
        coalesce(
            popularity_raw / nullif(sum(popularity_raw) over (partition by level, history), 0),
            cast(1 as double) / count(*) over (partition by level, history)
        ) as score

    from scored

),

final as (

    select
        policy,
        level,
        {{ k }} as k,
        history,
        cast(rank as integer) as rank,
        next_cluster_id,
        score,
        policy || ':' || '{{ var("split_mode") }}' as model_version

    from (
        select * from markov
        union all
        select * from popularity
    ) as ranked

)

select * from final
