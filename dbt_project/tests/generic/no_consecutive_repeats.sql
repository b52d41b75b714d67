{#- Adjacent rows (by order_by within partition_by) never repeat `column_name`. -#}
{% test no_consecutive_repeats(model, column_name, partition_by, order_by) %}

with

ordered as (

    select
        {{ column_name }} as value,
        lag({{ column_name }}) over (
            partition by {{ partition_by | join(', ') }}
            order by {{ order_by }}
        ) as previous_value

    from {{ model }}

)

select * from ordered

where value = previous_value

{% endtest %}
