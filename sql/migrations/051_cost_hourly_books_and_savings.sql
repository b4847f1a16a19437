-- cost_hourly (007) gains what the period queries that used to scan priced_lines FINAL
-- need (issue 16): cache_savings, price book and version in the key, and the first and
-- last event time of each row. cache_savings, price_book_versions and budget_status now
-- take whole hours from here and only the partial hours at the edges of a period (or a
-- budget window) from priced_lines FINAL, so their answers are the same for any period.
--
-- Engine: AggregatingMergeTree with SimpleAggregateFunction columns (was SummingMergeTree)
-- because first_event / last_event merge with min / max, not sum. Readers aggregate as
-- before (sum(amount), sum(lines), ... GROUP BY): existing queries read it unchanged.
-- ORDER BY: as in 007 plus price_book, price_book_version at the end; a book version
-- changes rarely, so this adds few rows. PARTITION BY month of hour, as before.
-- Money stays Decimal(38, 12) (quantity Decimal(38, 0)), summed exactly.
--
-- Upgrade: the view is dropped, the table is recomputed from priced_lines FINAL (the new
-- columns cannot be derived from the old rollup; this is what `nodemeter rebuild
-- cost_hourly` does, and it also removes duplicates the old view counted), then the view
-- is created again. Each statement can run again: an interrupted migration is re-run.
DROP TABLE IF EXISTS cost_hourly_mv;

CREATE OR REPLACE TABLE cost_hourly
(
    hour               DateTime('UTC'),
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
    lines              SimpleAggregateFunction(sum, UInt64),
    first_event        SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_event         SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind,
          price_book, price_book_version)
SETTINGS non_replicated_deduplication_window = 10000
AS SELECT
    toStartOfHour(toDateTime(event_time, 'UTC')) AS hour,
    tenant, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind,
    price_book, price_book_version,
    sum(quantity) AS quantity,
    sum(amount) AS amount,
    sum(cache_savings) AS cache_savings,
    toUInt64(count()) AS lines,
    min(event_time) AS first_event,
    max(event_time) AS last_event
FROM priced_lines FINAL
GROUP BY hour, tenant, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind,
         price_book, price_book_version;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_hourly_mv TO cost_hourly AS
SELECT
    toStartOfHour(toDateTime(event_time, 'UTC')) AS hour,
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
    toUInt64(count()) AS lines,
    min(event_time) AS first_event,
    max(event_time) AS last_event
FROM priced_lines
GROUP BY hour, tenant, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind,
         price_book, price_book_version;
