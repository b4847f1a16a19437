-- Cost per model and meter per UTC day for one tenant and period [start, end).
-- Reads the hourly rollup (007). quantity is in the meter's own unit (tokens, ms, calls).
SELECT
    toDate(hour) AS day,
    model,
    meter,
    currency,
    sum(quantity) AS quantity,
    sum(amount) AS amount
FROM cost_hourly
WHERE tenant = {tenant:String}
  AND hour >= {start:DateTime('UTC')}
  AND hour < {end:DateTime('UTC')}
GROUP BY day, model, meter, currency
ORDER BY day, model, meter, currency
