-- 040_worker_state.sql
CREATE TABLE IF NOT EXISTS worker_state ON CLUSTER nodemeter
(
    group_id     String,
    scope        LowCardinality(String),
    topic        LowCardinality(String),
    partition    UInt32,
    key          String,
    version      UInt64,
    offset       Int64,
    first_offset Int64 DEFAULT -1,
    open         UInt8 DEFAULT 0,
    value        String CODEC(ZSTD(3)),
    written_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/global', '{replica}', version)
ORDER BY (group_id, scope, topic, partition, key)
TTL toDateTime(written_at) + INTERVAL 2 DAY DELETE WHERE scope = 'request' AND open = 0;

CREATE TABLE IF NOT EXISTS event_index ON CLUSTER nodemeter
(
    tenant           LowCardinality(String),
    event_time       DateTime64(6, 'UTC'),
    event_id         String,
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS event_index_all ON CLUSTER nodemeter AS event_index
ENGINE = Distributed('nodemeter', currentDatabase(), event_index, cityHash64(tenant));

CREATE MATERIALIZED VIEW IF NOT EXISTS event_index_mv ON CLUSTER nodemeter TO event_index AS
SELECT tenant, event_time, event_id, source_topic, source_partition, source_offset
FROM usage_events;

INSERT INTO event_index_all SETTINGS distributed_foreground_insert = 1
SELECT tenant, event_time, event_id, source_topic, source_partition, source_offset
FROM usage_events_all;
