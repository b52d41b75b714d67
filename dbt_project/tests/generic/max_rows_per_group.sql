{#- No group of `group_by` columns holds more than `max_rows` rows (balancing caps). -#}
{% test max_rows_per_group(model, group_by, max_rows) %}

select
    {{ group_by | join(', ') }},
    count(*) as n_rows

from {{ model }}

group by {{ group_by | join(', ') }}

having count(*) > {{ max_rows }}

{% endtest %}
