{#-
    Engine-specific SQL lives here, behind adapter.dispatch.
    Models call these macros only; moving to dbt-spark or dbt-trino means adding a
    `spark__` / `trino__` variant of each macro below, without touching the models.
    `default__` is ANSI SQL where ANSI has the construct, otherwise a clear error.
-#}

{#- A list (array) literal from SQL expressions, in the given order. -#}
{% macro ie_list(items) %}
    {{ return(adapter.dispatch('ie_list', 'interest_explorer')(items)) }}
{% endmacro %}

{% macro default__ie_list(items) -%}
    array[{{ items | join(', ') }}]
{%- endmacro %}

{% macro duckdb__ie_list(items) -%}
    [{{ items | join(', ') }}]
{%- endmacro %}


{#- Number of elements of a list. -#}
{% macro ie_list_length(list_expr) %}
    {{ return(adapter.dispatch('ie_list_length', 'interest_explorer')(list_expr)) }}
{% endmacro %}

{% macro default__ie_list_length(list_expr) -%}
    cardinality({{ list_expr }})
{%- endmacro %}

{% macro duckdb__ie_list_length(list_expr) -%}
    len({{ list_expr }})
{%- endmacro %}


{#- True when the list contains the value. -#}
{% macro ie_list_contains(list_expr, value_expr) %}
    {{ return(adapter.dispatch('ie_list_contains', 'interest_explorer')(list_expr, value_expr)) }}
{% endmacro %}

{% macro default__ie_list_contains(list_expr, value_expr) -%}
    exists (select 1 from unnest({{ list_expr }}) as ie_u(ie_x) where ie_u.ie_x = {{ value_expr }})
{%- endmacro %}

{% macro duckdb__ie_list_contains(list_expr, value_expr) -%}
    list_contains({{ list_expr }}, {{ value_expr }})
{%- endmacro %}


{#- Aggregate a column into a list ordered by order_by (aggregate or window use). -#}
{% macro ie_list_agg(expr, order_by) %}
    {{ return(adapter.dispatch('ie_list_agg', 'interest_explorer')(expr, order_by)) }}
{% endmacro %}

{% macro default__ie_list_agg(expr, order_by) -%}
    array_agg({{ expr }} order by {{ order_by }})
{%- endmacro %}

{% macro duckdb__ie_list_agg(expr, order_by) -%}
    list({{ expr }} order by {{ order_by }})
{%- endmacro %}


{#-
    The last k distinct non-null values of an oldest-first list, oldest first.
    A value's position is its most recent occurrence: [a, b, a, c] with k = 3 -> [b, a, c].
    Returns fewer than k values when the list has fewer distinct values.
-#}
{% macro ie_last_distinct(list_expr, k) %}
    {{ return(adapter.dispatch('ie_last_distinct', 'interest_explorer')(list_expr, k)) }}
{% endmacro %}

{% macro default__ie_last_distinct(list_expr, k) -%}
    {{ exceptions.raise_compiler_error(
        "ie_last_distinct has no ANSI form; add a " ~ target.type ~ "__ie_last_distinct macro in macros/portability.sql"
    ) }}
{%- endmacro %}

{% macro duckdb__ie_last_distinct(list_expr, k) -%}
    {#- newest first, drop nulls, keep each value's first (= most recent) occurrence,
        take k, back to oldest first -#}
    list_reverse(list_slice(
        list_filter(
            list_filter(list_reverse({{ list_expr }}), lambda ie_x: ie_x is not null),
            lambda ie_x, ie_i: list_position(
                list_filter(list_reverse({{ list_expr }}), lambda ie_y: ie_y is not null), ie_x
            ) = ie_i
        ),
        1, {{ k }}
    ))
{%- endmacro %}


{#-
    Deterministic pseudo-random number in [0, 1) from a list of SQL expressions
    (ids + seed). DuckDB's hash() is stable for a given DuckDB version; it is used
    over md5 because it is ~30x faster on millions of rows.
-#}
{% macro ie_hash_unit(exprs) %}
    {{ return(adapter.dispatch('ie_hash_unit', 'interest_explorer')(exprs)) }}
{% endmacro %}

{% macro default__ie_hash_unit(exprs) -%}
    {{ exceptions.raise_compiler_error(
        "ie_hash_unit has no ANSI form; add a " ~ target.type ~ "__ie_hash_unit macro in macros/portability.sql"
        ~ " (e.g. spark: xxhash64, trino: xxhash64 over to_utf8)"
    ) }}
{%- endmacro %}

{% macro duckdb__ie_hash_unit(exprs) -%}
    (hash({{ exprs | join(', ') }}) / 18446744073709551616.0)
{%- endmacro %}


{#- The i-th element of a list, counting from 1. -#}
{% macro ie_list_element(list_expr, i) %}
    {{ return(adapter.dispatch('ie_list_element', 'interest_explorer')(list_expr, i)) }}
{% endmacro %}

{% macro default__ie_list_element(list_expr, i) -%}
    {{ list_expr }}[{{ i }}]
{%- endmacro %}


{#- Number of distinct elements of a list. -#}
{% macro ie_list_distinct_length(list_expr) %}
    {{ return(adapter.dispatch('ie_list_distinct_length', 'interest_explorer')(list_expr)) }}
{% endmacro %}

{% macro default__ie_list_distinct_length(list_expr) -%}
    cardinality(array_distinct({{ list_expr }}))
{%- endmacro %}

{% macro duckdb__ie_list_distinct_length(list_expr) -%}
    len(list_distinct({{ list_expr }}))
{%- endmacro %}


{#- A value of the ordered set at quantile q (an element of the set, not interpolated). -#}
{% macro ie_quantile_disc(expr, q) %}
    {{ return(adapter.dispatch('ie_quantile_disc', 'interest_explorer')(expr, q)) }}
{% endmacro %}

{% macro default__ie_quantile_disc(expr, q) -%}
    percentile_disc({{ q }}) within group (order by {{ expr }})
{%- endmacro %}

{% macro duckdb__ie_quantile_disc(expr, q) -%}
    quantile_disc({{ expr }}, {{ q }})
{%- endmacro %}


{#- An interpolated quantile of a numeric expression (aggregate). -#}
{% macro ie_quantile_cont(expr, q) %}
    {{ return(adapter.dispatch('ie_quantile_cont', 'interest_explorer')(expr, q)) }}
{% endmacro %}

{% macro default__ie_quantile_cont(expr, q) -%}
    percentile_cont({{ q }}) within group (order by {{ expr }})
{%- endmacro %}

{% macro duckdb__ie_quantile_cont(expr, q) -%}
    quantile_cont({{ expr }}, {{ q }})
{%- endmacro %}


{#- A typed empty list of integers. -#}
{% macro ie_empty_int_list() %}
    {{ return(adapter.dispatch('ie_empty_int_list', 'interest_explorer')()) }}
{% endmacro %}

{% macro default__ie_empty_int_list() -%}
    cast(array[] as integer array)
{%- endmacro %}

{% macro duckdb__ie_empty_int_list() -%}
    cast([] as integer[])
{%- endmacro %}


{#- Fail the statement with a message when cond is true (a guard inside a model). -#}
{% macro ie_fail_if(cond, message_expr) %}
    {{ return(adapter.dispatch('ie_fail_if', 'interest_explorer')(cond, message_expr)) }}
{% endmacro %}

{% macro default__ie_fail_if(cond, message_expr) -%}
    case when {{ cond }} then cast(({{ message_expr }}) as integer) end
{%- endmacro %}

{% macro duckdb__ie_fail_if(cond, message_expr) -%}
    case when {{ cond }} then error({{ message_expr }}) end
{%- endmacro %}


{#- The integers 1..n as a one-column relation `i` (n: a SQL expression or number). -#}
{% macro ie_integers(n) %}
    {{ return(adapter.dispatch('ie_integers', 'interest_explorer')(n)) }}
{% endmacro %}

{% macro default__ie_integers(n) -%}
    (select i from generate_series(1, {{ n }}) as ie_series(i))
{%- endmacro %}

{% macro duckdb__ie_integers(n) -%}
    (select range as i from range(1, ({{ n }}) + 1))
{%- endmacro %}
