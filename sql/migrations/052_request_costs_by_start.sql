-- Requests by the hour they started: where top_requests finds the most expensive
-- requests of a period without aggregating the tenant's whole history (issue 16; it
-- used to group every request of the tenant in request_node_costs, then filter with
-- HAVING on first_event: 2 s at 10M lines).
--
-- One row per (tenant, start_hour, request, currency) after merges: the cost, lines and
-- first event time of the request's lines in each insert block, keyed by the hour of the
-- earliest of them. Fed by request_costs_by_start_mv; `nodemeter rebuild` refills it from
-- priced_lines FINAL, one month at a time. Lines without a request are left out.
-- Engine: AggregatingMergeTree (sum, sum, min), readers do not need to aggregate it: it
-- only proposes candidates, and top_requests takes their exact totals, first event and
-- node breakdown from request_node_costs.
-- ORDER BY (tenant, start_hour, request_id, currency): a period is one key range.
-- INDEX amount minmax: `ORDER BY amount DESC LIMIT n` over that range reads only the
-- granules that can hold the n largest rows (ClickHouse's top-N filtering).
-- PARTITION BY month of start_hour.
-- A request whose lines reach ClickHouse in blocks that start in different hours has a
-- row under each such hour; each row is a part of its cost. top_requests ranks these
-- rows, takes generously more candidates than it returns, and checks each candidate's
-- start and total in request_node_costs, so what it prints is exact; see
-- sql/queries/top_requests.sql for the one case it can rank wrongly.
-- Filled from history before the view exists (REPLACE: safe to run again).
CREATE OR REPLACE TABLE request_costs_by_start
(
    tenant      LowCardinality(String),
    start_hour  DateTime('UTC'),
    request_id  String CODEC(ZSTD(3)),
    currency    LowCardinality(String),
    amount      SimpleAggregateFunction(sum, Decimal(38, 12)),
    lines       SimpleAggregateFunction(sum, UInt64),
    first_event SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    INDEX amount_minmax amount TYPE minmax GRANULARITY 1
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(start_hour)
ORDER BY (tenant, start_hour, request_id, currency)
SETTINGS non_replicated_deduplication_window = 10000
AS SELECT
    tenant,
    toStartOfHour(toDateTime(min(event_time), 'UTC')) AS start_hour,
    request_id,
    currency,
    sum(amount) AS amount,
    toUInt64(count()) AS lines,
    min(event_time) AS first_event
FROM priced_lines FINAL
WHERE request_id != ''
GROUP BY tenant, request_id, currency;

CREATE MATERIALIZED VIEW IF NOT EXISTS request_costs_by_start_mv TO request_costs_by_start AS
SELECT
    tenant,
    toStartOfHour(toDateTime(min(event_time), 'UTC')) AS start_hour,
    request_id,
    currency,
    sum(amount) AS amount,
    toUInt64(count()) AS lines,
    min(event_time) AS first_event
FROM priced_lines
WHERE request_id != ''
GROUP BY tenant, request_id, currency;

-- request_node_costs (009) with 1024-row granules instead of 8192: top_requests reads the
-- rows of a few dozen candidate requests by primary key, and each lookup reads one
-- granule. Same columns, key and data (copied; REPLACE: safe to run again).
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
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 1024
AS SELECT tenant, request_id, node_id, currency, workflow, amount, lines, first_event, last_event
FROM request_node_costs;
