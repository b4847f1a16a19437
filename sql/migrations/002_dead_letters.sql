-- Dead letters: every record the worker could not accept, with the reason and where it
-- came from. The same record also goes to the dead-letter topic (nodemeter.dlq.v1).
--
-- ORDER BY the source position: a redelivered bad record (worker restart) collapses
-- into one row under ReplacingMergeTree; the position is unique per record.
-- payload is the raw bytes (as String) for replay after a fix.
CREATE TABLE IF NOT EXISTS dead_letters
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, source_partition, source_offset)
TTL toDateTime(received_at) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000;
