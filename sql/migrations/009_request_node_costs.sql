-- Cost of each request, broken down by node: "most expensive requests and which step
-- spent it". One row per (tenant, request, node, currency) after merges.
--
-- Fed by request_node_costs_mv on inserts into priced_lines; `nodemeter rebuild`
-- refills it from priced_lines (FINAL). The worker's own request records (merge of
-- spans, completeness) live in request_records / request_nodes (migration 003); this
-- table is the money side, derived only from priced lines.
-- Engine: AggregatingMergeTree with SimpleAggregateFunction columns so a merge keeps
-- sum(amount), sum(lines), min(first_event) and max(last_event); readers still
-- aggregate (sum/min/max GROUP BY) because merges are eventual.
-- ORDER BY (tenant, request_id, node_id, currency): a request's nodes are adjacent.
-- PARTITION BY month of the line's event time: a request spanning a month boundary
-- has a row in each month, which the readers' GROUP BY folds together.
CREATE TABLE IF NOT EXISTS request_node_costs
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
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS request_node_costs_mv TO request_node_costs AS
SELECT
    tenant,
    request_id,
    node_id,
    currency,
    max(workflow) AS workflow,
    sum(amount) AS amount,
    toUInt64(count()) AS lines,
    min(event_time) AS first_event,
    max(event_time) AS last_event
FROM priced_lines
GROUP BY tenant, request_id, node_id, currency;

-- request_costs: one row per request with its per-node breakdown, most expensive node
-- first. A plain view (no storage) over request_node_costs.
CREATE VIEW IF NOT EXISTS request_costs AS
SELECT
    tenant,
    request_id,
    currency,
    max(workflow) AS workflow,
    sum(node_amount) AS amount,
    min(node_first) AS first_event,
    max(node_last) AS last_event,
    arraySort(x -> (-x.2, x.1), groupArray((node_id, node_amount))) AS nodes
FROM
(
    SELECT
        tenant,
        request_id,
        currency,
        node_id,
        max(workflow) AS workflow,
        sum(amount) AS node_amount,
        min(first_event) AS node_first,
        max(last_event) AS node_last
    FROM request_node_costs
    GROUP BY tenant, request_id, currency, node_id
)
GROUP BY tenant, request_id, currency;
