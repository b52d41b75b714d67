{#- Every non-null (columns) tuple of the model exists as (to_columns) in `to`:
    relationships for composite keys such as (level, cluster_id). -#}
{% test composite_relationships(model, columns, to, to_columns=none) %}

{%- set to_columns = to_columns or columns -%}

select child.*

from {{ model }} as child

where
    {%- for column in columns %}
    child.{{ column }} is not null and
    {%- endfor %}
    not exists (
        select 1
        from {{ to }} as parent
        where
            {%- for column in columns %}
            parent.{{ to_columns[loop.index0] }} = child.{{ column }}{{ " and" if not loop.last }}
            {%- endfor %}
    )

{% endtest %}
