-- Budget alerts: one row per (tenant, budget, window, threshold) crossing, the same
-- records the worker sends to nodemeter.budget-alerts.v1.
--
-- alert_id is a hash of (tenant, budget, window_id, threshold_pct): a re-sent alert
-- (worker restart, redelivered batch) has the same id and collapses here
-- (ReplacingMergeTree ORDER BY (tenant, alert_id)); query with FINAL for exact counts.
-- Money is Decimal(38, 12) like priced_lines. PARTITION BY month of the window start.
CREATE TABLE IF NOT EXISTS budget_alerts
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant, alert_id)
SETTINGS non_replicated_deduplication_window = 10000;
