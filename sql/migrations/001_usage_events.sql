-- Raw usage events: the immutable audit record of every valid event the worker accepted.
--
-- Engine: ReplacingMergeTree collapses rows with the same ORDER BY key, so a duplicate
-- event_id that slipped past the worker's dedupe table (e.g. a resend after its TTL)
-- is removed at merge time; queries that must be exact before merges use FINAL or
-- `LIMIT 1 BY event_id` (the query library does).
-- ORDER BY (tenant, event_id): dedupe key; tenant first so per-tenant scans and row
-- policies prune well.
-- PARTITION BY month of event time: retention drops whole parts.
-- TTL: raw retention, default 400 days (at least 90 are required for audits); change
-- with `ALTER TABLE usage_events MODIFY TTL ...`.
-- non_replicated_deduplication_window: the worker tags every insert with an
-- insert_deduplication_token built from the source offsets, so a retried block is a no-op.
CREATE TABLE IF NOT EXISTS usage_events
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, event_id)
TTL toDateTime(event_time) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000;
