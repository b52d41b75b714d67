-- In strict mode no example's label appears earlier in the user's sequence
-- (in local mode the rule is the not_in_list test on the history).
select examples.*

from {{ ref('novel_transition_examples') }} as examples

inner join {{ ref('user_cluster_sequences') }} as sequences
    on examples.user_id = sequences.user_id
    and examples.level = sequences.level
    and examples.next_cluster_id = sequences.cluster_id
    and sequences.seq_pos < examples.seq_pos

where {{ "true" if var('novelty_mode') == 'strict' else "false" }}
