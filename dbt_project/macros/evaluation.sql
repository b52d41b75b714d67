{#- lookup_evaluation's label of the thin histories: every history seen fewer than
    var history_seen_bounds[1] times in train (seen_0_4 by default). -#}
{% macro ie_thin_segment() -%}
seen_0_{{ var('history_seen_bounds')[1] - 1 }}
{%- endmacro %}
