-- Priced lines: one row per (event, meter, tier) charge, plus adjustment/settlement and
-- credit lines. The money of record: rollups and invoices are sums of these lines.
--
-- Money is Decimal(38, 12): a line is quantity (integer) x unit price (at most 12
-- decimal places), so it is exact with no rounding; rounding to the invoice currency
-- happens once, when an invoice total is presented (see docs/pricing.md).
-- line_id is deterministic (event_id, meter, tier, kind), so a re-priced duplicate
-- collapses under ReplacingMergeTree; ORDER BY (tenant, window_id, line_id).
-- PARTITION BY month of event time.
CREATE TABLE IF NOT EXISTS priced_lines
(
    line_id            String,
    line_kind          LowCardinality(String),   -- usage | adjustment | settlement | credit
    event_id           String,
    tenant             LowCardinality(String),
    request_id         String,
    node_id            LowCardinality(String),
    workflow           LowCardinality(String),
    model              LowCardinality(String),
    provider           LowCardinality(String),
    meter              LowCardinality(String),   -- input_tokens, gpu_ms, custom:<name>, ...
    gpu_type           LowCardinality(String) DEFAULT '',
    quantity           Decimal(38, 0),
    unit_price         Decimal(38, 12),
    amount             Decimal(38, 12),
    currency           LowCardinality(String) DEFAULT 'USD',
    price_book         LowCardinality(String),
    price_book_version UInt32,
    charge_model       LowCardinality(String),   -- flat | graduated | volume | package | credit
    tier               UInt16,
    window_id          String,                   -- e.g. '2026-11' (tenant time zone)
    window_start       DateTime('UTC'),
    event_time         DateTime64(6, 'UTC'),
    priced_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, window_id, line_id)
SETTINGS non_replicated_deduplication_window = 10000;
