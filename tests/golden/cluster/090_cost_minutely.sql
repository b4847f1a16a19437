-- 090_cost_minutely.sql
DROP TABLE IF EXISTS cost_minutely__replace_all ON CLUSTER nodemeter SYNC;

DROP TABLE IF EXISTS cost_minutely__replace ON CLUSTER nodemeter SYNC;

CREATE TABLE cost_minutely__replace ON CLUSTER nodemeter
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
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, minute, workflow, node_id, model, provider, meter, gpu_type, currency,
          line_kind, price_book, price_book_version)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS cost_minutely__replace_all ON CLUSTER nodemeter AS cost_minutely__replace
ENGINE = Distributed('nodemeter', currentDatabase(), cost_minutely__replace, cityHash64(tenant));

INSERT INTO cost_minutely__replace_all SETTINGS distributed_foreground_insert = 1
SELECT
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
FROM priced_lines_all FINAL
GROUP BY minute, tenant, workflow, node_id, model, provider, meter, gpu_type, currency,
         line_kind, price_book, price_book_version;

DROP TABLE IF EXISTS cost_minutely__replace_all ON CLUSTER nodemeter SYNC;

CREATE TABLE IF NOT EXISTS cost_minutely ON CLUSTER nodemeter
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
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, minute, workflow, node_id, model, provider, meter, gpu_type, currency,
          line_kind, price_book, price_book_version)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

EXCHANGE TABLES cost_minutely__replace AND cost_minutely ON CLUSTER nodemeter;

DROP TABLE IF EXISTS cost_minutely__replace ON CLUSTER nodemeter SYNC;

CREATE OR REPLACE TABLE cost_minutely_all ON CLUSTER nodemeter AS cost_minutely
ENGINE = Distributed('nodemeter', currentDatabase(), cost_minutely, cityHash64(tenant));

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_minutely_mv ON CLUSTER nodemeter TO cost_minutely AS
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
