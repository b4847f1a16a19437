-- A tenant's cost per time bucket (bucket_hours long) in [start, end), per node:
-- the series behind the report's cost-over-time chart. Reads cost_hourly (007).
SELECT
    toStartOfInterval(hour, toIntervalHour({bucket_hours:UInt32}), 'UTC') AS bucket,
    node_id,
    currency,
    sum(amount) AS amount
FROM cost_hourly
WHERE tenant = {tenant:String}
  AND hour >= {start:DateTime('UTC')}
  AND hour < {end:DateTime('UTC')}
GROUP BY bucket, node_id, currency
ORDER BY bucket, node_id, currency
