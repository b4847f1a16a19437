-- Models and GPU types one tenant was billed for in [start, end) through a generic
-- rate (rate_match = 'generic', migration 060): the event named a model or GPU type
-- that no rate of the tenant's books names and no alias maps, so a rate without one
-- priced it, probably at the wrong price. Add a rate or an alias (docs/pricing.md).
-- Reads only the period (priced_lines is sorted by tenant, window, hour: 050).
SELECT
    model,
    gpu_type,
    meter,
    currency,
    count() AS lines,
    sum(quantity) AS quantity,
    sum(amount) AS amount,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM priced_lines FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime('UTC')}
  AND event_time < {end:DateTime('UTC')}
  AND line_kind = 'usage'
  AND rate_match = 'generic'
GROUP BY model, gpu_type, meter, currency
ORDER BY amount DESC, model, gpu_type, meter
