-- request_costs_by_start (052) with a threshold for top_requests (issue 16). Ranking the
-- rows of a month (2.7M per tenant at 100M lines) by amount read the whole period's
-- amount column: about half of top_requests' time. Now top_requests first takes a
-- threshold from the projection below, then reads only the granules whose amount index
-- says they can hold a row at or above it.
--
-- PROJECTION bucket_max: per (tenant, start_hour, cityHash64(request_id) % 64) the largest
-- amount of the rows stored (aggregated per part, rebuilt when parts merge:
-- deduplicate_merge_projection_mode = 'rebuild'). Every value is the amount of a row the
-- ranking reads, and the buckets are disjoint sets of rows, so if a period has N bucket
-- maxima, its N-th largest maximum T has at least N rows at or above it: the N largest
-- rows all have amount >= T, and `WHERE amount >= T` ranks the same rows as before, whether
-- or not parts are merged and whatever the sign of the amounts. 64 buckets: a day has
-- 1,536 maxima, more than the candidates top_requests takes (4 x limit + 40), and the
-- projection stays small (one row per tenant, hour and bucket with requests; 200,000 at
-- 100M lines). A period with fewer maxima than candidates ranks all its rows, as before.
-- index_granularity = 1024 (was 8192): the amount index (minmax, one entry per granule)
-- then skips all but a few dozen granules of a month: a granule of 8192 rows almost always
-- holds one row of the top few hundred. ORDER BY, PARTITION BY and engine as in 052.
--
-- Upgrade: CREATE OR REPLACE ... AS SELECT copies the rows (same columns; rows of one key
-- may merge in the copy, as at a merge) into the new table and swaps it in; the view
-- request_costs_by_start_mv names the table, so it feeds the new one. REPLACE: safe to
-- run again. Stop the worker first, as for every migration.
CREATE OR REPLACE TABLE request_costs_by_start
(
    tenant      LowCardinality(String),
    start_hour  DateTime('UTC'),
    request_id  String CODEC(ZSTD(3)),
    currency    LowCardinality(String),
    amount      SimpleAggregateFunction(sum, Decimal(38, 12)),
    lines       SimpleAggregateFunction(sum, UInt64),
    first_event SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    INDEX amount_minmax amount TYPE minmax GRANULARITY 1,
    PROJECTION bucket_max
    (
        SELECT tenant, start_hour, cityHash64(request_id) % 64, max(amount)
        GROUP BY tenant, start_hour, cityHash64(request_id) % 64
    )
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(start_hour)
ORDER BY (tenant, start_hour, request_id, currency)
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 1024,
         deduplicate_merge_projection_mode = 'rebuild'
AS SELECT tenant, start_hour, request_id, currency, amount, lines, first_event
FROM request_costs_by_start;
