{#- The value of `column_name` is not an element of the list in `list_column`. -#}
{% test not_in_list(model, column_name, list_column) %}

select *

from {{ model }}

where {{ ie_list_contains(list_column, column_name) }}

{% endtest %}
