-- Models and GPU types one tenant was billed for in [start, end) through a generic
-- rate (rate_match = 'generic', migration 060): the event named a model or GPU type
-- that no rate of the tenant's books names and no alias maps, so a rate without one
-- priced it, probably at the wrong price. Add a rate or an alias (docs/pricing.md).
-- Not FINAL: FINAL would merge the tenant's whole period before the rate_match filter
-- (5.7 s at 100M lines); here only generic lines are read, and GROUP BY line_id keeps
-- one copy of each (copies of a line are identical: pricing is deterministic), which
-- is the same answer. The hour bounds let the sort key (tenant, window, hour: 050)
-- skip the rest.
SELECT
    model,
    gpu_type,
    meter,
    currency,
    count() AS lines,
    sum(quantity) AS quantity,
    sum(amount) AS amount,
    min(at) AS first_seen,
    max(at) AS last_seen
FROM
(
    SELECT
        line_id,
        any(model) AS model,
        any(gpu_type) AS gpu_type,
        any(meter) AS meter,
        any(currency) AS currency,
        any(quantity) AS quantity,
        any(amount) AS amount,
        any(event_time) AS at
    FROM priced_lines
    WHERE tenant = {tenant:String}
      AND toStartOfHour(event_time) >= toStartOfHour({start:DateTime('UTC')})
      AND toStartOfHour(event_time) < {end:DateTime('UTC')}
      AND event_time >= {start:DateTime('UTC')}
      AND event_time < {end:DateTime('UTC')}
      AND rate_match = 'generic'
      AND line_kind = 'usage'
    GROUP BY line_id
)
GROUP BY model, gpu_type, meter, currency
ORDER BY amount DESC, model, gpu_type, meter
