-- The worker's progress of record and its recoverable state, stored beside the data.
--
-- One table holds, per consumer group (the worker's app id):
--   scope 'progress': per source partition, the last offset whose effects are stored
--                     (offset); written in the same insert as the states below, so a
--                     crash keeps both or neither;
--   scope 'intent':   per source partition, the batch being applied (first_offset ..
--                     offset), written before its effects: a batch whose intent is newer
--                     than the progress may have been partly stored (it is re-applied
--                     with lookups, see docs/worker.md);
--   scope 'request':  the ingest agent's request states (open requests and those closed
--                     within the retention; value: JSON of RequestState);
--   scope 'tenant':   the pricing agent's tenant states (billing windows, budgets,
--                     the ingest offsets it has priced; value: JSON).
-- Engine: ReplacingMergeTree(version) keeps the newest row per key; readers use FINAL.
-- ORDER BY (group_id, scope, topic, partition, key): a restart reads only its group's
-- partitions. Not partitioned: an insert is one part, applied atomically.
-- TTL: request states leave once their retention has passed (the worker also filters
-- them on read); progress and tenant states are rewritten as long as they are in use.
CREATE TABLE IF NOT EXISTS worker_state
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
ENGINE = ReplacingMergeTree(version)
ORDER BY (group_id, scope, topic, partition, key)
TTL toDateTime(written_at) + INTERVAL 2 DAY DELETE WHERE scope = 'request' AND open = 0;

-- Dedupe index: which source record stored each event, sorted by event time so that a
-- batch's lookup reads only the granules of its events' times (not the tenant's whole
-- history). Fed from usage_events by event_index_mv, in the same insert.
CREATE TABLE IF NOT EXISTS event_index
(
    tenant           LowCardinality(String),
    event_time       DateTime64(6, 'UTC'),
    event_id         String,
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS event_index_mv TO event_index AS
SELECT tenant, event_time, event_id, source_topic, source_partition, source_offset
FROM usage_events;

INSERT INTO event_index
SELECT tenant, event_time, event_id, source_topic, source_partition, source_offset
FROM usage_events;
