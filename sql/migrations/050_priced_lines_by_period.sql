-- priced_lines re-sorted by period and compressed harder (issue 16). Same columns and
-- types as 005 + 030, so the sink writes it unchanged.
--
-- ORDER BY (tenant, window_id, toStartOfHour(event_time), request_id, event_id, meter,
-- line_id):
--   tenant, window_id  as before: per-tenant scans and row policies prune, and the
--                      worker's stored-line lookup (tenant, window, line ids) stays
--                      within one billing window;
--   hour of event_time a tenant-period read (the edge hours the hybrid queries take
--                      from the base table, budget windows) reads only that period's
--                      granules instead of the tenant's whole window (was: line_id
--                      order, so every period read scanned the window, and with FINAL
--                      every partition: ClickHouse 26 defers partition pruning under
--                      FINAL when the partition column is not in the key);
--   request, event,    the lines of one event, and the events of one request, lie
--   meter              side by side whatever the concurrency of the stream: the 32-hex
--                      request and event ids repeat in runs and compress to a fraction,
--                      and the per-meter prices and quantities form repeating patterns;
--   line_id last       the identity. Every column before it is a function of the line
--                      (a line re-priced after a redelivery has the same event, time,
--                      window and meter), so ReplacingMergeTree still collapses exactly
--                      the rows with the same line_id, as with the old key.
-- PARTITION BY month of event time, as before.
-- Codecs: the random 32-hex ids take most of the bytes; ZSTD(6) stores them near their
-- 16-byte entropy (ZSTD(3): about 18). Decimal(38, x) money stays Decimal (16 bytes
-- raw; Delta/T64 do not apply to 128-bit types): ZSTD(3) squeezes the leading zeros.
-- event_time and priced_at: Delta + ZSTD (close in time within a request, a block).
-- Measured by bench/bench_analytics.py: docs/analytics.md.
--
-- Upgrade: CREATE OR REPLACE ... AS SELECT copies every row (a duplicate not merged yet
-- may collapse in the copy, as at a merge) into a new table and swaps it in (Atomic
-- database). Running it again copies the new table onto itself: same result, so an
-- interrupted migration can run again. The materialized views on priced_lines name it,
-- so they keep feeding the rollups from the new table. Stop the worker first (like
-- every migration): rows inserted during the copy would be lost with the old table.
-- The new table starts with an empty insert-deduplication log.
-- rate_match (migration 060, issue 11) is added first, with 060's own statement: a store
-- that already ran 060 keeps its values through the copy, and 060 is then a no-op.
ALTER TABLE priced_lines ADD COLUMN IF NOT EXISTS rate_match LowCardinality(String) DEFAULT '';

CREATE OR REPLACE TABLE priced_lines
(
    line_id            String CODEC(ZSTD(6)),
    line_kind          LowCardinality(String),
    event_id           String CODEC(ZSTD(6)),
    tenant             LowCardinality(String),
    request_id         String CODEC(ZSTD(6)),
    node_id            LowCardinality(String),
    workflow           LowCardinality(String),
    model              LowCardinality(String),
    provider           LowCardinality(String),
    meter              LowCardinality(String),
    gpu_type           LowCardinality(String) DEFAULT '',
    quantity           Decimal(38, 0) CODEC(ZSTD(3)),
    unit_price         Decimal(38, 12) CODEC(ZSTD(3)),
    amount             Decimal(38, 12) CODEC(ZSTD(3)),
    currency           LowCardinality(String) DEFAULT 'USD',
    price_book         LowCardinality(String),
    price_book_version UInt32 CODEC(ZSTD(1)),
    charge_model       LowCardinality(String),
    tier               UInt16 CODEC(ZSTD(1)),
    window_id          String CODEC(ZSTD(1)),
    window_start       DateTime('UTC') CODEC(ZSTD(1)),
    event_time         DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    priced_at          DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    cache_savings      Decimal(38, 12) DEFAULT 0 CODEC(ZSTD(3)),
    rate_match         LowCardinality(String) DEFAULT ''
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, window_id, toStartOfHour(event_time), request_id, event_id, meter, line_id)
SETTINGS non_replicated_deduplication_window = 10000
AS SELECT
    line_id, line_kind, event_id, tenant, request_id, node_id, workflow, model, provider,
    meter, gpu_type, quantity, unit_price, amount, currency, price_book, price_book_version,
    charge_model, tier, window_id, window_start, event_time, priced_at, cache_savings,
    rate_match
FROM priced_lines;
