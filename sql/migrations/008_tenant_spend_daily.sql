-- Daily spend per tenant: invoices-to-date, budget dashboards and the reconciliation
-- (sum of lines = sum of daily spend, to the unit).
--
-- Fed by tenant_spend_daily_mv on inserts into priced_lines; `nodemeter rebuild`
-- refills it from priced_lines (FINAL).
-- Engine: SummingMergeTree over amount and lines (readers aggregate, see 007).
-- day is the UTC calendar day of the event; billing windows in a tenant's own time
-- zone are priced_lines.window_id (the invoice query groups by that instead).
-- ORDER BY (tenant, day, currency, line_kind): one row per tenant and day after
-- merges, per currency and line kind. PARTITION BY month of day.
CREATE TABLE IF NOT EXISTS tenant_spend_daily
(
    day       Date,
    tenant    LowCardinality(String),
    currency  LowCardinality(String),
    line_kind LowCardinality(String),
    amount    Decimal(38, 12),
    lines     UInt64
)
ENGINE = SummingMergeTree((amount, lines))
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, day, currency, line_kind)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS tenant_spend_daily_mv TO tenant_spend_daily AS
SELECT
    toDate(event_time, 'UTC') AS day,
    tenant,
    currency,
    line_kind,
    sum(amount) AS amount,
    toUInt64(count()) AS lines
FROM priced_lines
GROUP BY day, tenant, currency, line_kind;
