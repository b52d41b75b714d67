{#- No list in `column_name` repeats an element. -#}
{% test list_values_distinct(model, column_name) %}

select *

from {{ model }}

where {{ ie_list_distinct_length(column_name) }} <> {{ ie_list_length(column_name) }}

{% endtest %}
