-- Request records: one row per request (tenant, request_id) merged by the stream worker
-- from all spans of all branches, threads and processes of the request; per-node usage
-- in request_nodes. Columns are documented in docs/worker.md.
--
-- Engine: ReplacingMergeTree(revision). revision = number of distinct records merged
-- (usage events + the end record). A span arriving after the record was written gives a
-- correction with a higher revision, which replaces the earlier row; a stray resend
-- after the worker dropped the request's state yields revision 1 and never wins.
-- Read with FINAL (or argMax by revision) for exact results before merges.
-- ORDER BY (tenant, request_id): the identity; tenant first for per-tenant scans.
-- PARTITION BY month of the request's start.
CREATE TABLE IF NOT EXISTS request_records
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
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant, request_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Per-node usage of a request, one row per (tenant, request_id, node_id) and revision;
-- join to priced_lines on (tenant, request_id, node_id). Same versioning as above: the
-- revision of a node row is the revision of the request record it belongs to (nodes
-- only ever gain usage, so the newest revision of each node row is the right one).
CREATE TABLE IF NOT EXISTS request_nodes
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
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(first_at)
ORDER BY (tenant, request_id, node_id)
SETTINGS non_replicated_deduplication_window = 10000;
