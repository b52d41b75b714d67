{#-
    Engine-specific SQL lives here, behind adapter.dispatch.
    Models call these macros only; another engine means adding its variant of each
    macro below (`spark__` exists for dbt-spark), without touching the models.
    `default__` is ANSI SQL where ANSI has the construct, otherwise a clear error.
    Spark notes: dbt-spark turns ANSI mode off (bad casts give NULL, so failing needs
    raise_error), size(NULL) is -1, and element_at counts from 1.
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

{% macro spark__ie_list(items) -%}
    array({{ items | join(', ') }})
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

{% macro spark__ie_list_length(list_expr) -%}
    {#- NULL for a NULL list, as on DuckDB (size gives -1) -#}
    if({{ list_expr }} is null, null, size({{ list_expr }}))
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

{% macro spark__ie_list_contains(list_expr, value_expr) -%}
    array_contains({{ list_expr }}, {{ value_expr }})
{%- endmacro %}


{#-
    Aggregate a column into a list ordered by order_by (one ascending expression; NULL
    values are kept). expr may start with 'distinct ' (then order_by must be a function
    of the value, e.g. the value itself).
-#}
{% macro ie_list_agg(expr, order_by) %}
    {{ return(adapter.dispatch('ie_list_agg', 'interest_explorer')(expr, order_by)) }}
{% endmacro %}

{% macro default__ie_list_agg(expr, order_by) -%}
    array_agg({{ expr }} order by {{ order_by }})
{%- endmacro %}

{% macro duckdb__ie_list_agg(expr, order_by) -%}
    list({{ expr }} order by {{ order_by }})
{%- endmacro %}

{% macro spark__ie_list_agg(expr, order_by) -%}
    {#- Spark aggregates lists unordered: collect (key, value) pairs, sort, keep values -#}
    {%- if ',' in order_by or ' desc' in order_by | lower -%}
        {{ exceptions.raise_compiler_error("spark__ie_list_agg orders by one ascending expression, got '" ~ order_by ~ "'") }}
    {%- endif -%}
    {%- set distinct = (expr | trim | lower).startswith('distinct ') -%}
    {%- set value = (expr | trim)[9:] if distinct else expr -%}
    transform(
        array_sort({{ 'collect_set' if distinct else 'collect_list' }}(named_struct('ie_k', {{ order_by }}, 'ie_v', {{ value }}))),
        ie_s -> ie_s.ie_v
    )
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

{% macro spark__ie_last_distinct(list_expr, k) -%}
    {#- array_distinct keeps each value's first occurrence, in order -#}
    reverse(slice(
        array_distinct(filter(reverse({{ list_expr }}), ie_x -> ie_x is not null)),
        1, {{ k }}
    ))
{%- endmacro %}


{#-
    Deterministic pseudo-random number in [0, 1) from a list of SQL expressions
    (ids + seed), the same on every engine: the expressions' text joined by '|', its
    md5, the first 13 hex digits (52 bits) as an integer, divided by 2^52 (exact in a
    double). Expressions must be integers or text: their text forms agree across
    engines, those of floats do not. (DuckDB's hash() is ~10x faster but exists on
    DuckDB only.)
-#}
{% macro ie_hash_unit(exprs) %}
    {{ return(adapter.dispatch('ie_hash_unit', 'interest_explorer')(exprs)) }}
{% endmacro %}

{% macro default__ie_hash_unit(exprs) -%}
    {{ exceptions.raise_compiler_error(
        "ie_hash_unit has no ANSI form; add a " ~ target.type ~ "__ie_hash_unit macro in macros/portability.sql"
        ~ " (md5 of the '|'-joined text, first 13 hex digits / 2^52, as the duckdb and spark variants)"
    ) }}
{%- endmacro %}

{% macro duckdb__ie_hash_unit(exprs) -%}
    {%- set texts = [] -%}
    {%- for e in exprs -%}{%- do texts.append('cast(' ~ e ~ ' as varchar)') -%}{%- endfor -%}
    (cast(cast(('0x' || substr(md5(concat_ws('|', {{ texts | join(', ') }})), 1, 13)) as bigint) as double) / 4503599627370496)
{%- endmacro %}

{% macro spark__ie_hash_unit(exprs) -%}
    {%- set texts = [] -%}
    {%- for e in exprs -%}{%- do texts.append('cast(' ~ e ~ ' as string)') -%}{%- endfor -%}
    (cast(conv(substr(md5(concat_ws('|', {{ texts | join(', ') }})), 1, 13), 16, 10) as double) / 4503599627370496)
{%- endmacro %}


{#- The i-th element of a list, counting from 1. -#}
{% macro ie_list_element(list_expr, i) %}
    {{ return(adapter.dispatch('ie_list_element', 'interest_explorer')(list_expr, i)) }}
{% endmacro %}

{% macro default__ie_list_element(list_expr, i) -%}
    {{ list_expr }}[{{ i }}]
{%- endmacro %}

{% macro spark__ie_list_element(list_expr, i) -%}
    element_at({{ list_expr }}, {{ i }})
{%- endmacro %}


{#- Number of distinct non-null elements of a list. -#}
{% macro ie_list_distinct_length(list_expr) %}
    {{ return(adapter.dispatch('ie_list_distinct_length', 'interest_explorer')(list_expr)) }}
{% endmacro %}

{% macro default__ie_list_distinct_length(list_expr) -%}
    cardinality(array_distinct({{ list_expr }}))
{%- endmacro %}

{% macro duckdb__ie_list_distinct_length(list_expr) -%}
    len(list_distinct({{ list_expr }}))
{%- endmacro %}

{% macro spark__ie_list_distinct_length(list_expr) -%}
    {#- DuckDB's list_distinct drops NULLs, Spark's array_distinct keeps one -#}
    if({{ list_expr }} is null, null, size(array_distinct(filter({{ list_expr }}, ie_x -> ie_x is not null))))
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

{% macro spark__ie_quantile_disc(expr, q) -%}
    {#- DuckDB's definition: the ceil(n * q)-th smallest non-null value (at least the
        first), exact for a decimal literal q; Spark's percentile_disc takes numbers only.
        Collects the column into one array: exact, not for billions of rows. -#}
    element_at(array_sort(collect_list({{ expr }})), cast(greatest(1, ceil(count({{ expr }}) * {{ q }})) as int))
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

{% macro spark__ie_quantile_cont(expr, q) -%}
    {#- DuckDB's definition to the last bit (Spark's percentile interpolates in another
        order): sorted non-null values a, r = (n - 1) * q, d = r - floor(r),
        a[floor r] * (1 - d) + a[ceil r] * d. Collects each group's values. -#}
    element_at(transform(array(array_sort(collect_list(cast({{ expr }} as double)))), ie_a ->
        element_at(transform(array(cast(size(ie_a) - 1 as double) * cast({{ q }} as double)), ie_r ->
            case
                when size(ie_a) = 0 then null
                when floor(ie_r) = ceil(ie_r) then element_at(ie_a, cast(floor(ie_r) as int) + 1)
                else element_at(ie_a, cast(floor(ie_r) as int) + 1) * (1 - (ie_r - floor(ie_r)))
                    + element_at(ie_a, cast(ceil(ie_r) as int) + 1) * (ie_r - floor(ie_r))
            end
        ), 1)
    ), 1)
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

{% macro spark__ie_empty_int_list() -%}
    cast(array() as array<int>)
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

{% macro spark__ie_fail_if(cond, message_expr) -%}
    case when {{ cond }} then raise_error({{ message_expr }}) end
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

{% macro spark__ie_integers(n) -%}
    (select id as i from range(1, ({{ n }}) + 1))
{%- endmacro %}


{#-
    A list's elements as rows beside the row that holds it, with their position
    counting from 1: rendered after `from <relation>` (a join clause), so that
    `alias.value_name` and `alias.position_name` can be selected.
-#}
{% macro ie_unnest_with_position(list_expr, alias, value_name, position_name) %}
    {{ return(adapter.dispatch('ie_unnest_with_position', 'interest_explorer')(list_expr, alias, value_name, position_name)) }}
{% endmacro %}

{% macro default__ie_unnest_with_position(list_expr, alias, value_name, position_name) -%}
    cross join unnest({{ list_expr }}) with ordinality as {{ alias }} ({{ value_name }}, {{ position_name }})
{%- endmacro %}

{% macro spark__ie_unnest_with_position(list_expr, alias, value_name, position_name) -%}
    lateral view inline(transform(
        {{ list_expr }}, (ie_x, ie_i) -> named_struct('{{ value_name }}', ie_x, '{{ position_name }}', ie_i + 1)
    )) {{ alias }} as {{ value_name }}, {{ position_name }}
{%- endmacro %}


{#- Whole days from 1970-01-01 to the date of a timestamp. -#}
{% macro ie_epoch_days(ts_expr) %}
    {{ return(adapter.dispatch('ie_epoch_days', 'interest_explorer')(ts_expr)) }}
{% endmacro %}

{% macro default__ie_epoch_days(ts_expr) -%}
    {{ dbt.datediff("cast('1970-01-01' as timestamp)", ts_expr, 'day') }}
{%- endmacro %}

{% macro spark__ie_epoch_days(ts_expr) -%}
    datediff(to_date({{ ts_expr }}), date'1970-01-01')
{%- endmacro %}


{#- Midnight of day n after 1970-01-01, a timestamp without time zone (n: SQL). -#}
{% macro ie_epoch_day_start(days_expr) %}
    {{ return(adapter.dispatch('ie_epoch_day_start', 'interest_explorer')(days_expr)) }}
{% endmacro %}

{% macro default__ie_epoch_day_start(days_expr) -%}
    {{ dbt.dateadd('day', days_expr, "cast('1970-01-01' as timestamp)") }}
{%- endmacro %}

{% macro spark__ie_epoch_day_start(days_expr) -%}
    {#- dbt's spark dateadd goes through unix time, a timestamp in the session zone -#}
    cast(date_add(date'1970-01-01', cast({{ days_expr }} as int)) as timestamp_ntz)
{%- endmacro %}


{#-
    Config of an incremental model that replaces the rows of the keys its run
    produces (keys: column names): delete+insert where the engine has it; on Spark
    (plain Parquet tables) a table partitioned by the keys whose partitions are
    overwritten, so the key columns come last in the table.
-#}
{% macro ie_replace_by_keys(keys) %}
    {{ return(adapter.dispatch('ie_replace_by_keys', 'interest_explorer')(keys)) }}
{% endmacro %}

{% macro default__ie_replace_by_keys(keys) -%}
    {{ return({'unique_key': keys, 'incremental_strategy': 'delete+insert'}) }}
{%- endmacro %}

{% macro spark__ie_replace_by_keys(keys) -%}
    {{ return({'partition_by': keys, 'incremental_strategy': 'insert_overwrite', 'file_format': 'parquet'}) }}
{%- endmacro %}


{#-
    on-run-start: make the tables the Python assets write readable by the run. DuckDB
    reads them where they are. Spark registers each source the selected nodes read
    as an external table over Parquet files at <root>/<schema>/<table>/ (the layout
    models_ml.warehouse.export_parquet writes); root is the var spark_sources, else
    IE_SPARK_SOURCES, else $IE_SPARK_DIR/sources (a cluster: any path Spark reads).
-#}
{% macro ie_register_sources() %}
    {{ return(adapter.dispatch('ie_register_sources', 'interest_explorer')()) }}
{% endmacro %}

{% macro default__ie_register_sources() -%}
{%- endmacro %}

{% macro spark__ie_register_sources() -%}
    {%- if execute -%}
        {%- set root = var('spark_sources', env_var('IE_SPARK_SOURCES', env_var('IE_SPARK_DIR', '../warehouse/spark') ~ '/sources')) -%}
        {%- set wanted = [] -%}
        {%- for node in graph.nodes.values() if node.unique_id in selected_resources -%}
            {%- for parent in node.depends_on.nodes if parent.startswith('source.') and parent not in wanted -%}
                {%- do wanted.append(parent) -%}
            {%- endfor -%}
        {%- endfor -%}
        {%- for source_id in wanted | sort -%}
            {%- set src = graph.sources[source_id] -%}
            {%- set relation = src.schema ~ '.' ~ src.identifier -%}
            {%- set location = root ~ '/' ~ src.schema ~ '/' ~ src.identifier -%}
            {#- a missing folder fails with UNABLE_TO_INFER_SCHEMA: the log line names it -#}
            {%- do log('source ' ~ relation ~ ' <- Parquet files in ' ~ location
                       ~ ' (python -m models_ml.cli.spark_build exports them)', info=True) -%}
            {%- do run_query('create schema if not exists ' ~ src.schema) -%}
            {%- do run_query('drop table if exists ' ~ relation) -%}
            {%- do run_query('create table ' ~ relation ~ " using parquet location '" ~ location ~ "'") -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}


{#-
    Overrides dbt-spark's safe_cast for unit-test fixtures: dbt renders a YAML list
    as `[a, b]`, which Spark does not parse; here it becomes array(a, b). Otherwise
    dbt-spark's behaviour (strings cast to complex types are unquoted).
-#}
{% macro spark__safe_cast(field, type) -%}
    {%- if field is iterable and field is not string and field is not mapping -%}
        {%- set items = [] -%}
        {%- for item in field -%}
            {%- do items.append(dbt.string_literal(dbt.escape_single_quotes(item)) if item is string else ('null' if item is none else item | string)) -%}
        {%- endfor -%}
        cast({{ ie_list(items) }} as {{ type }})
    {%- else -%}
        {%- set complex = type.lower().startswith('struct') or type.lower().startswith('array') or type.lower().startswith('map') -%}
        cast({{ field.strip('"').strip("'") if (complex and field is string) else field }} as {{ type }})
    {%- endif -%}
{%- endmacro %}
