-- 007_cost_hourly.sql
CREATE TABLE IF NOT EXISTS cost_hourly ON CLUSTER nodemeter
(
    hour       DateTime('UTC'),
    tenant     LowCardinality(String),
    workflow   LowCardinality(String),
    node_id    LowCardinality(String),
    model      LowCardinality(String),
    provider   LowCardinality(String),
    meter      LowCardinality(String),
    gpu_type   LowCardinality(String),
    currency   LowCardinality(String),
    line_kind  LowCardinality(String),
    quantity   Decimal(38, 0),
    amount     Decimal(38, 12),
    lines      UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', (quantity, amount, lines))
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS cost_hourly_all ON CLUSTER nodemeter AS cost_hourly
ENGINE = Distributed('nodemeter', currentDatabase(), cost_hourly, cityHash64(tenant));

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_hourly_mv ON CLUSTER nodemeter TO cost_hourly AS
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
    sum(quantity) AS quantity,
    sum(amount) AS amount,
    toUInt64(count()) AS lines
FROM priced_lines
GROUP BY hour, tenant, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind;
