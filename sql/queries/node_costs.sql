-- Cost per node for one tenant and period, most expensive first.
-- Reads the hourly rollup (007); the period is half-open [start, end) on whole hours.
-- Empty node_id is money not tied to a node (credits, adjustments).
SELECT
    workflow,
    node_id,
    currency,
    arraySort(groupUniqArrayIf(model, model != '')) AS models,
    sum(amount) AS amount,
    sum(lines) AS lines
FROM cost_hourly
WHERE tenant = {tenant:String}
  AND hour >= {start:DateTime('UTC')}
  AND hour < {end:DateTime('UTC')}
GROUP BY workflow, node_id, currency
ORDER BY amount DESC, workflow, node_id, currency
