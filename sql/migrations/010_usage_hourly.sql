-- Hourly measured usage (not money) by tenant / workflow / node / model / GPU type and
-- source: what was emitted and stored, before pricing. Used for "GPU ms measured vs
-- estimated" dashboards and to reconcile stored events with the raw audit table.
--
-- Fed by usage_hourly_mv on inserts into usage_events; `nodemeter rebuild` refills it
-- from usage_events (FINAL), which also removes duplicates that reached the raw table.
-- Engine: SummingMergeTree over the counters (readers aggregate, see 007).
-- billable and status are key columns: warm-up/cold-start usage and failed spans are
-- reported, not hidden, but never mixed with billable usage.
-- ORDER BY tenant first, then hour. PARTITION BY month, like usage_events.
-- Custom meters are not rolled up here (they are priced lines: meter 'custom:<name>').
CREATE TABLE IF NOT EXISTS usage_hourly
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
ENGINE = SummingMergeTree((events, input_tokens, output_tokens, cached_input_tokens,
                           cache_write_tokens, gpu_ms, cpu_ms, api_calls))
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, workflow, node_id, model, provider, gpu_type, gpu_source, status, billable)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly AS
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
