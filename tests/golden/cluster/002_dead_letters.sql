-- 002_dead_letters.sql
CREATE TABLE IF NOT EXISTS dead_letters ON CLUSTER nodemeter
(
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    reason           LowCardinality(String),
    detail           String,
    tenant           LowCardinality(String) DEFAULT '',
    record_key       String DEFAULT '',
    payload          String,
    received_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, source_partition, source_offset)
TTL toDateTime(received_at) + INTERVAL 400 DAY
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS dead_letters_all ON CLUSTER nodemeter AS dead_letters
ENGINE = Distributed('nodemeter', currentDatabase(), dead_letters, cityHash64(tenant));
