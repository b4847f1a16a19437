-- Hourly cost rollup by tenant / workflow / node / model / meter: the table behind the
-- per-node report, cost per model and meter per day, and the cost-over-time chart.
--
-- Fed by the materialized view cost_hourly_mv on every insert into priced_lines, so it
-- only sees lines inserted after it was created: `nodemeter rebuild` refills it from
-- priced_lines (FINAL) to cover history or a fixed bug.
--
-- Engine: SummingMergeTree adds up quantity, amount and lines of rows with the same
-- ORDER BY key when parts merge. Merges are eventual, so readers always aggregate
-- (sum(...) GROUP BY ...) instead of reading rows as they are.
-- Money: amount is Decimal(38, 12), the type of priced_lines.amount; a sum of such
-- decimals is exact (26 integer digits of headroom), never a float.
-- ORDER BY: tenant first (per-tenant scans and row policies prune), then hour (period
-- filters), then the dimensions analysts group by. currency and line_kind are part of
-- the key so different currencies are never summed together and credits/adjustments
-- stay separable from usage.
-- PARTITION BY month: same as priced_lines, so a rebuild can go month by month.
CREATE TABLE IF NOT EXISTS cost_hourly
(
    hour       DateTime('UTC'),
    tenant     LowCardinality(String),
    workflow   LowCardinality(String),
    node_id    LowCardinality(String),
    model      LowCardinality(String),
    provider   LowCardinality(String),
    meter      LowCardinality(String),
    gpu_type   LowCardinality(String),
    currency   LowCardinality(String),
    line_kind  LowCardinality(String),
    quantity   Decimal(38, 0),
    amount     Decimal(38, 12),
    lines      UInt64
)
ENGINE = SummingMergeTree((quantity, amount, lines))
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_hourly_mv TO cost_hourly AS
SELECT
    toStartOfHour(toDateTime(event_time, 'UTC')) AS hour,
    tenant,
    workflow,
    node_id,
    model,
    provider,
    meter,
    gpu_type,
    currency,
    line_kind,
    sum(quantity) AS quantity,
    sum(amount) AS amount,
    toUInt64(count()) AS lines
FROM priced_lines
GROUP BY hour, tenant, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind;
