-- A tenant's spend per UTC day in [start, end) with the running total of the period.
-- Reads tenant_spend_daily (008).
SELECT
    day,
    currency,
    amount,
    lines,
    sum(amount) OVER (PARTITION BY currency ORDER BY day ROWS UNBOUNDED PRECEDING) AS running_total
FROM
(
    SELECT day, currency, sum(amount) AS amount, sum(lines) AS lines
    FROM tenant_spend_daily
    WHERE tenant = {tenant:String}
      AND day >= toDate({start:DateTime('UTC')})
      AND day < toDate({end:DateTime('UTC')})
    GROUP BY day, currency
)
ORDER BY currency, day
