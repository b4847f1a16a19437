-- 008_tenant_spend_daily.sql
CREATE TABLE IF NOT EXISTS tenant_spend_daily ON CLUSTER nodemeter
(
    day       Date,
    tenant    LowCardinality(String),
    currency  LowCardinality(String),
    line_kind LowCardinality(String),
    amount    Decimal(38, 12),
    lines     UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', (amount, lines))
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, day, currency, line_kind)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS tenant_spend_daily_all ON CLUSTER nodemeter AS tenant_spend_daily
ENGINE = Distributed('nodemeter', currentDatabase(), tenant_spend_daily, cityHash64(tenant));

CREATE MATERIALIZED VIEW IF NOT EXISTS tenant_spend_daily_mv ON CLUSTER nodemeter TO tenant_spend_daily AS
SELECT
    toDate(event_time, 'UTC') AS day,
    tenant,
    currency,
    line_kind,
    sum(amount) AS amount,
    toUInt64(count()) AS lines
FROM priced_lines
GROUP BY day, tenant, currency, line_kind;
