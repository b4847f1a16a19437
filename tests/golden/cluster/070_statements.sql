-- 070_statements.sql
CREATE TABLE IF NOT EXISTS statements ON CLUSTER nodemeter
(
    tenant         LowCardinality(String),
    window_id      String,
    window_start   DateTime64(6, 'UTC'),
    window_end     DateTime64(6, 'UTC'),
    statement_id   String,
    content_id     String,
    issued_at      DateTime64(3, 'UTC'),
    version        UInt64,
    lines          UInt64,
    totals_currency Array(LowCardinality(String)),
    totals_amount  Array(Decimal(38, 12))
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/global', '{replica}', version)
ORDER BY (tenant, window_id);

CREATE TABLE IF NOT EXISTS statement_lines ON CLUSTER nodemeter
(
    tenant       LowCardinality(String),
    statement_id String,
    content_id   String,
    line_id      String,
    window_id    String
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
ORDER BY (tenant, statement_id, content_id, line_id);

CREATE TABLE IF NOT EXISTS statement_lines_all ON CLUSTER nodemeter AS statement_lines
ENGINE = Distributed('nodemeter', currentDatabase(), statement_lines, cityHash64(tenant));
