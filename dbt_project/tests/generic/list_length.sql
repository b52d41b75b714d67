{#- Every list in `column_name` has exactly `length` elements. -#}
{% test list_length(model, column_name, length) %}

select *

from {{ model }}

where {{ column_name }} is null
    or {{ ie_list_length(column_name) }} <> {{ length }}

{% endtest %}
