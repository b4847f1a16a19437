-- cost_minutely: cost_hourly (051, 075) by minute, for the edges of a period (issue 16).
-- The hybrid period queries (cache_savings, cache_savings_by_node, price_book_versions)
-- take the hours wholly inside a period from cost_hourly; the partial hours at its edges
-- used to come from priced_lines FINAL (at 100M lines, about 60,000 lines across 16 parts
-- for a day from 05:30 to 05:30, a third of the query's time). Now the whole minutes of
-- those partial hours come from here, and only the lines of a partial minute (none for a
-- period on whole minutes: tenant time zones are whole minutes off UTC) from priced_lines.
--
-- Same columns, engine and rules as cost_hourly: AggregatingMergeTree with
-- SimpleAggregateFunction columns, readers aggregate (merges are eventual); fed by
-- cost_minutely_mv on inserts into priced_lines, so like cost_hourly it counts what was
-- inserted (a retried block is dropped by the deduplication window; a line re-priced in
-- another block is flagged by reconcile and removed by `nodemeter rebuild`).
-- ORDER BY (tenant, minute, ...the dimensions of cost_hourly): a tenant's edge minutes
-- are one short key range each (at most 59 minutes on either side of a period).
-- PARTITION BY month of minute, as cost_hourly.
-- Size: one row per minute and dimension combination that had lines; at 100M bench lines
-- 2M rows, well under a byte per line (docs/analytics.md, "Figures").
--
-- Upgrade: filled from priced_lines FINAL (REPLACE: safe to run again), then the view is
-- created. Stop the worker first, as for every migration: lines inserted between the
-- fill and the view would be missing here (reconcile says so; rebuild refills it).
-- Column order as in the view's SELECT: `nodemeter rebuild` inserts it by position.
CREATE OR REPLACE TABLE cost_minutely
(
    minute             DateTime('UTC'),
    tenant             LowCardinality(String),
    workflow           LowCardinality(String),
    node_id            LowCardinality(String),
    model              LowCardinality(String),
    provider           LowCardinality(String),
    meter              LowCardinality(String),
    gpu_type           LowCardinality(String),
    currency           LowCardinality(String),
    line_kind          LowCardinality(String),
    price_book         LowCardinality(String),
    price_book_version UInt32,
    quantity           SimpleAggregateFunction(sum, Decimal(38, 0)),
    amount             SimpleAggregateFunction(sum, Decimal(38, 12)),
    cache_savings      SimpleAggregateFunction(sum, Decimal(38, 12)),
    input_list_cost    SimpleAggregateFunction(sum, Decimal(38, 12)),
    lines              SimpleAggregateFunction(sum, UInt64),
    first_event        SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_event         SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, minute, workflow, node_id, model, provider, meter, gpu_type, currency,
          line_kind, price_book, price_book_version)
SETTINGS non_replicated_deduplication_window = 10000
AS SELECT
    toStartOfMinute(toDateTime(event_time, 'UTC')) AS minute,
    tenant, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind,
    price_book, price_book_version,
    sum(quantity) AS quantity,
    sum(amount) AS amount,
    sum(cache_savings) AS cache_savings,
    sum(input_list_cost) AS input_list_cost,
    toUInt64(count()) AS lines,
    min(event_time) AS first_event,
    max(event_time) AS last_event
FROM priced_lines FINAL
GROUP BY minute, tenant, workflow, node_id, model, provider, meter, gpu_type, currency,
         line_kind, price_book, price_book_version;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_minutely_mv TO cost_minutely AS
SELECT
    toStartOfMinute(toDateTime(event_time, 'UTC')) AS minute,
    tenant,
    workflow,
    node_id,
    model,
    provider,
    meter,
    gpu_type,
    currency,
    line_kind,
    price_book,
    price_book_version,
    sum(quantity) AS quantity,
    sum(amount) AS amount,
    sum(cache_savings) AS cache_savings,
    sum(input_list_cost) AS input_list_cost,
    toUInt64(count()) AS lines,
    min(event_time) AS first_event,
    max(event_time) AS last_event
FROM priced_lines
GROUP BY minute, tenant, workflow, node_id, model, provider, meter, gpu_type, currency,
         line_kind, price_book, price_book_version;
