{#-
    Every element of the lists in `column_name` (each of `length` elements) exists as
    (`group_column`, element) in `to` (`to_columns`): e.g. each history cluster is a
    cluster of the row's level. Returns the missing (group, element) pairs.
-#}
{% test list_values_exist(model, column_name, length, group_column, to, to_columns) %}

with

elements as (

    {%- for i in range(1, (length | int) + 1) %}
    select {{ group_column }} as group_value, {{ ie_list_element(column_name, i) }} as element
    from {{ model }}
    {{ "union all" if not loop.last }}
    {%- endfor %}

),

missing as (

    select distinct elements.group_value, elements.element

    from elements

    where not exists (
        select 1
        from {{ to }} as target
        where target.{{ to_columns[0] }} = elements.group_value
            and target.{{ to_columns[1] }} = elements.element
    )

)

select * from missing

{% endtest %}
