-- The most expensive requests of a tenant that started in [start, end), with each
-- request's cost broken down by node (most expensive node first).
-- Reads request_node_costs (009), aggregated because merges are eventual. Lines without
-- a request (credits, adjustments) are left out.
SELECT
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
        request_id,
        currency,
        node_id,
        max(workflow) AS workflow,
        sum(amount) AS node_amount,
        min(first_event) AS node_first,
        max(last_event) AS node_last
    FROM request_node_costs
    WHERE tenant = {tenant:String} AND request_id != ''
    GROUP BY request_id, currency, node_id
)
GROUP BY request_id, currency
HAVING first_event >= {start:DateTime('UTC')} AND first_event < {end:DateTime('UTC')}
ORDER BY amount DESC, request_id
LIMIT {limit:UInt32}
