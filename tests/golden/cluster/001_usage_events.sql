-- 001_usage_events.sql
CREATE TABLE IF NOT EXISTS usage_events ON CLUSTER nodemeter
(
    event_id            String,
    tenant              LowCardinality(String),
    request_id          String,
    node_id             LowCardinality(String),
    span_id             String,
    parent_span_id      String DEFAULT '',
    branch_path         String DEFAULT '',
    workflow            LowCardinality(String) DEFAULT '',
    model               LowCardinality(String) DEFAULT '',
    provider            LowCardinality(String) DEFAULT '',
    sequence            UInt32 DEFAULT 0,
    input_tokens        UInt64 DEFAULT 0,
    output_tokens       UInt64 DEFAULT 0,
    cached_input_tokens UInt64 DEFAULT 0,
    cache_write_tokens  UInt64 DEFAULT 0,
    gpu_ms              UInt64 DEFAULT 0,
    gpu_type            LowCardinality(String) DEFAULT '',
    gpu_source          LowCardinality(String) DEFAULT 'NONE',
    cpu_ms              UInt64 DEFAULT 0,
    api_calls           UInt64 DEFAULT 0,
    custom              Map(String, UInt64),
    status              LowCardinality(String) DEFAULT 'OK',
    billable            Bool DEFAULT true,
    non_billable_reason String DEFAULT '',
    event_time          DateTime64(6, 'UTC'),
    attributes          Map(String, String),
    source_topic        LowCardinality(String) DEFAULT '',
    source_partition    UInt32 DEFAULT 0,
    source_offset       UInt64 DEFAULT 0,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, event_id)
TTL toDateTime(event_time) + INTERVAL 400 DAY
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS usage_events_all ON CLUSTER nodemeter AS usage_events
ENGINE = Distributed('nodemeter', currentDatabase(), usage_events, cityHash64(tenant));
