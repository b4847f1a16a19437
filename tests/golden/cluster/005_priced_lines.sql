-- 005_priced_lines.sql
CREATE TABLE IF NOT EXISTS priced_lines ON CLUSTER nodemeter
(
    line_id            String,
    line_kind          LowCardinality(String),
    event_id           String,
    tenant             LowCardinality(String),
    request_id         String,
    node_id            LowCardinality(String),
    workflow           LowCardinality(String),
    model              LowCardinality(String),
    provider           LowCardinality(String),
    meter              LowCardinality(String),
    gpu_type           LowCardinality(String) DEFAULT '',
    quantity           Decimal(38, 0),
    unit_price         Decimal(38, 12),
    amount             Decimal(38, 12),
    currency           LowCardinality(String) DEFAULT 'USD',
    price_book         LowCardinality(String),
    price_book_version UInt32,
    charge_model       LowCardinality(String),
    tier               UInt16,
    window_id          String,
    window_start       DateTime('UTC'),
    event_time         DateTime64(6, 'UTC'),
    priced_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, window_id, line_id)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS priced_lines_all ON CLUSTER nodemeter AS priced_lines
ENGINE = Distributed('nodemeter', currentDatabase(), priced_lines, cityHash64(tenant));
