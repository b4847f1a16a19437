-- request_node_costs (009, 052) with 256-row granules and small compressed blocks (issue
-- 16). top_requests reads the rows of its 4 x limit + 40 candidate requests by primary
-- key, once per part: each lookup reads one granule of every column, and with 1024-row
-- granules in 64 KiB compressed blocks that was about half the query's time at 100M lines
-- (80 candidates x 11 parts: 740,000 rows read for 400). With 256-row granules and
-- blocks of 8-64 KiB (min/max_compress_block_size) a lookup decompresses about a quarter
-- of that. Cost: more marks (one per 256 rows; the primary index of a 62.5M-row table is
-- about 10 MB) and slightly larger files; full scans (reconcile, request_costs) read the
-- same bytes. Same columns, key, engine and partitioning as 052.
--
-- Upgrade: CREATE OR REPLACE ... AS SELECT copies the rows (rows of one key may merge in
-- the copy, as at a merge) and swaps the table in; request_node_costs_mv names it, so it
-- feeds the new one. The copy is written in blocks of up to 8M rows (fewer parts to merge
-- afterwards). REPLACE: safe to run again. Stop the worker first, as for every migration.
CREATE OR REPLACE TABLE request_node_costs
(
    tenant      LowCardinality(String),
    request_id  String,
    node_id     LowCardinality(String),
    currency    LowCardinality(String),
    workflow    SimpleAggregateFunction(max, LowCardinality(String)),
    amount      SimpleAggregateFunction(sum, Decimal(38, 12)),
    lines       SimpleAggregateFunction(sum, UInt64),
    first_event SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_event  SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(first_event)
ORDER BY (tenant, request_id, node_id, currency)
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 256,
         min_compress_block_size = 8192, max_compress_block_size = 65536
AS SELECT tenant, request_id, node_id, currency, workflow, amount, lines, first_event, last_event
FROM request_node_costs
SETTINGS min_insert_block_size_rows = 8000000, min_insert_block_size_bytes = 1073741824;
