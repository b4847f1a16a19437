-- 009_request_node_costs.sql
CREATE TABLE IF NOT EXISTS request_node_costs ON CLUSTER nodemeter
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
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(first_event)
ORDER BY (tenant, request_id, node_id, currency)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS request_node_costs_all ON CLUSTER nodemeter AS request_node_costs
ENGINE = Distributed('nodemeter', currentDatabase(), request_node_costs, cityHash64(tenant));

CREATE MATERIALIZED VIEW IF NOT EXISTS request_node_costs_mv ON CLUSTER nodemeter TO request_node_costs AS
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

CREATE VIEW IF NOT EXISTS request_costs ON CLUSTER nodemeter AS
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

CREATE VIEW IF NOT EXISTS request_costs_all ON CLUSTER nodemeter AS
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
    FROM request_node_costs_all
    GROUP BY tenant, request_id, currency, node_id
)
GROUP BY tenant, request_id, currency;
