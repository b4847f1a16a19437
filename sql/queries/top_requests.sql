-- The most expensive requests of a tenant that started in [start, end), with each
-- request's cost broken down by node (most expensive node first). Lines without a
-- request (credits, adjustments) are left out.
-- Reads only the period: candidates are the largest rows of request_costs_by_start (052)
-- in the period's hours (a key range), 4 x limit + 40 of them. A threshold first: the
-- N-th largest of the period's bucket maxima (projection bucket_max_16, 091, 093) has at
-- least N rows at or above it, so `amount >= threshold` keeps the same N largest rows and
-- lets the amount index skip nearly every granule (a period with fewer maxima than
-- candidates ranks all its rows). Their exact totals, first event and per-node
-- amounts come from request_node_costs (009) by primary key, aggregated because merges
-- are eventual, and a candidate that started before start is dropped there. Amounts and
-- starts printed are therefore exact. The one way to rank wrongly: a request whose lines
-- reached ClickHouse in blocks starting in different hours is several rows there, and if
-- every one of them is smaller than the last candidate while their sum belongs in the
-- top, it is missed (rows of one hour merge in the background; `nodemeter rebuild`
-- joins a request's rows of one month).
WITH
(
    SELECT arrayReverseSort(groupArray(top))
    FROM
    (
        SELECT max(amount) AS top
        FROM request_costs_by_start
        WHERE tenant = {tenant:String}
          AND start_hour >= toStartOfHour({start:DateTime('UTC')})
          AND start_hour < {end:DateTime('UTC')}
        GROUP BY tenant, start_hour, cityHash64(request_id) % 16
    )
) AS bucket_maxima,
greatest(least({limit:UInt32} * 4 + 40, 1000), {limit:UInt32}) AS n_candidates,
candidates AS
(
    SELECT request_id
    FROM request_costs_by_start
    WHERE tenant = {tenant:String}
      AND start_hour >= toStartOfHour({start:DateTime('UTC')})
      AND start_hour < {end:DateTime('UTC')}
      AND amount >= if(length(bucket_maxima) >= n_candidates, bucket_maxima[n_candidates],
                       toDecimal128('-99999999999999999999999999', 12))
    ORDER BY amount DESC
    LIMIT n_candidates
)
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
    WHERE tenant = {tenant:String} AND request_id IN candidates
    GROUP BY request_id, currency, node_id
)
GROUP BY request_id, currency
HAVING first_event >= {start:DateTime('UTC')} AND first_event < {end:DateTime('UTC')}
ORDER BY amount DESC, request_id
LIMIT {limit:UInt32}
