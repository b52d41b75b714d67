{#- `column_name` takes one value within each group (e.g. one split per user). -#}
{% test single_value_per_group(model, column_name, group_by) %}

select
    {{ group_by | join(', ') }},
    count(distinct {{ column_name }}) as n_values

from {{ model }}

group by {{ group_by | join(', ') }}

having count(distinct {{ column_name }}) > 1

{% endtest %}
