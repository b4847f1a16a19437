-- 006_budget_alerts.sql
CREATE TABLE IF NOT EXISTS budget_alerts ON CLUSTER nodemeter
(
    alert_id      String,
    tenant        LowCardinality(String),
    budget        LowCardinality(String),
    workflow      LowCardinality(String) DEFAULT '',
    window_id     String,
    window_start  DateTime64(6, 'UTC'),
    window_end    DateTime64(6, 'UTC'),
    threshold_pct UInt16,
    level         LowCardinality(String),
    limit_amount  Decimal(38, 12),
    spend_amount  Decimal(38, 12),
    currency      LowCardinality(String) DEFAULT 'USD',
    hard_limit    Bool DEFAULT false,
    event_id      String DEFAULT '',
    crossed_at    DateTime64(6, 'UTC'),
    raised_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant, alert_id)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS budget_alerts_all ON CLUSTER nodemeter AS budget_alerts
ENGINE = Distributed('nodemeter', currentDatabase(), budget_alerts, cityHash64(tenant));
