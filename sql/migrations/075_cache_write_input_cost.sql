-- input_list_cost (issue 11): on cache_write_tokens lines, what the tokens would have cost
-- as plain input at the model's input_tokens list price (flat price or first tier, the
-- rate that prices the event's input_tokens: same book, version in force at the event
-- time); 0 on every other line. The write premium is amount - input_list_cost: what
-- sql/queries/cache_savings.sql subtracts from the savings (it used to subtract the whole
-- write cost). Exact Decimal, set by the pricing worker when it prices the line.
-- Lines stored before this migration read 0: their whole write cost counts as premium
-- (the old, smaller savings figure), never more savings than they had.
ALTER TABLE priced_lines ADD COLUMN IF NOT EXISTS input_list_cost Decimal(38, 12) DEFAULT 0
    CODEC(ZSTD(3));

-- cost_hourly (051) sums it too, so the hybrid queries take whole hours from the rollup.
-- Existing rows read 0, as do the lines they sum: no recompute is needed. The view is
-- dropped and created again with the new sum. The column sits after cache_savings in
-- the table as in the view's SELECT: `nodemeter rebuild` inserts that SELECT into the
-- table by position. Each statement can run again: an interrupted migration is re-run.
ALTER TABLE cost_hourly ADD COLUMN IF NOT EXISTS input_list_cost
    SimpleAggregateFunction(sum, Decimal(38, 12)) DEFAULT 0 AFTER cache_savings;

DROP TABLE IF EXISTS cost_hourly_mv;

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
    price_book,
    price_book_version,
    sum(quantity) AS quantity,
    sum(amount) AS amount,
    sum(cache_savings) AS cache_savings,
    sum(input_list_cost) AS input_list_cost,
    toUInt64(count()) AS lines,
    min(event_time) AS first_event,
    max(event_time) AS last_event
FROM priced_lines
GROUP BY hour, tenant, workflow, node_id, model, provider, meter, gpu_type, currency, line_kind,
         price_book, price_book_version;
