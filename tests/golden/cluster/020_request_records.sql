-- 020_request_records.sql
CREATE TABLE IF NOT EXISTS request_records ON CLUSTER nodemeter
(
    tenant          LowCardinality(String),
    request_id      String,
    revision        UInt32,
    complete        Bool,
    is_correction   Bool,
    workflow        LowCardinality(String) DEFAULT '',
    root_span_id    String DEFAULT '',
    status          LowCardinality(String) DEFAULT 'OK',
    has_end         Bool,
    expected_spans  UInt32,
    spans_seen      UInt32,
    events          UInt32,
    started_at      DateTime64(6, 'UTC'),
    ended_at        DateTime64(6, 'UTC'),
    node_path       Array(String),
    branch_paths    Array(String),
    span_tree       Array(Tuple(span_id String, parent_span_id String, node_id String, branch_path String)),
    input_tokens        UInt64 DEFAULT 0,
    output_tokens       UInt64 DEFAULT 0,
    cached_input_tokens UInt64 DEFAULT 0,
    cache_write_tokens  UInt64 DEFAULT 0,
    gpu_ms              UInt64 DEFAULT 0,
    cpu_ms              UInt64 DEFAULT 0,
    api_calls           UInt64 DEFAULT 0,
    custom              Map(String, UInt64),
    written_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', revision)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant, request_id)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS request_records_all ON CLUSTER nodemeter AS request_records
ENGINE = Distributed('nodemeter', currentDatabase(), request_records, cityHash64(tenant));

CREATE TABLE IF NOT EXISTS request_nodes ON CLUSTER nodemeter
(
    tenant          LowCardinality(String),
    request_id      String,
    node_id         LowCardinality(String),
    revision        UInt32,
    spans           UInt32,
    events          UInt32,
    billable_events UInt32,
    branch_paths    Array(String),
    models          Array(String),
    status          LowCardinality(String) DEFAULT 'OK',
    first_at        DateTime64(6, 'UTC'),
    last_at         DateTime64(6, 'UTC'),
    input_tokens        UInt64 DEFAULT 0,
    output_tokens       UInt64 DEFAULT 0,
    cached_input_tokens UInt64 DEFAULT 0,
    cache_write_tokens  UInt64 DEFAULT 0,
    gpu_ms              UInt64 DEFAULT 0,
    cpu_ms              UInt64 DEFAULT 0,
    api_calls           UInt64 DEFAULT 0,
    custom              Map(String, UInt64),
    written_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', revision)
PARTITION BY toYYYYMM(first_at)
ORDER BY (tenant, request_id, node_id)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS request_nodes_all ON CLUSTER nodemeter AS request_nodes
ENGINE = Distributed('nodemeter', currentDatabase(), request_nodes, cityHash64(tenant));
