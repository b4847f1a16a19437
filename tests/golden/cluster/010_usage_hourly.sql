-- 010_usage_hourly.sql
CREATE TABLE IF NOT EXISTS usage_hourly ON CLUSTER nodemeter
(
    hour                DateTime('UTC'),
    tenant              LowCardinality(String),
    workflow            LowCardinality(String),
    node_id             LowCardinality(String),
    model               LowCardinality(String),
    provider            LowCardinality(String),
    gpu_type            LowCardinality(String),
    gpu_source          LowCardinality(String),
    status              LowCardinality(String),
    billable            Bool,
    events              UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    gpu_ms              UInt64,
    cpu_ms              UInt64,
    api_calls           UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', (events, input_tokens, output_tokens, cached_input_tokens,
                           cache_write_tokens, gpu_ms, cpu_ms, api_calls))
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, workflow, node_id, model, provider, gpu_type, gpu_source, status, billable)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS usage_hourly_all ON CLUSTER nodemeter AS usage_hourly
ENGINE = Distributed('nodemeter', currentDatabase(), usage_hourly, cityHash64(tenant));

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv ON CLUSTER nodemeter TO usage_hourly AS
SELECT
    toStartOfHour(toDateTime(event_time, 'UTC')) AS hour,
    tenant,
    workflow,
    node_id,
    model,
    provider,
    gpu_type,
    gpu_source,
    status,
    billable,
    toUInt64(count()) AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(gpu_ms) AS gpu_ms,
    sum(cpu_ms) AS cpu_ms,
    sum(api_calls) AS api_calls
FROM usage_events
GROUP BY hour, tenant, workflow, node_id, model, provider, gpu_type, gpu_source, status, billable;
