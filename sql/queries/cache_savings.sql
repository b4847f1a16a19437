-- What prompt caching saved one tenant in [start, end), per model.
-- cached_cost: what cache reads (meter cached_input_tokens) were charged.
-- uncached_cost: what the same tokens would have cost at the model's input_tokens list
--   price = cached_cost + priced_lines.cache_savings (set by the pricing worker from the
--   same price book version, migration 030).
-- cache_write_cost: what writing the cache cost (meter cache_write_tokens).
-- cache_write_premium: what the writes cost beyond the same tokens sent as plain input =
--   cache_write_cost - priced_lines.input_list_cost (set by the pricing worker from the
--   same price book version, migration 075; lines priced before it read 0 there, so
--   their whole write cost counts).
-- net_savings = uncached_cost - cached_cost - cache_write_premium (negative: the cache
--   cost more than it saved). Worked example: docs/analytics.md, "Cache savings".
-- Reads only the period: the hours wholly inside it from cost_hourly (051, 075), the
-- whole minutes of the partial hours at its edges from cost_minutely (090), and the lines
-- of a partial minute at an edge from priced_lines, one copy per line_id (copies of a
-- line are identical: pricing is deterministic); none for a period on whole minutes. So
-- any period gives the same answer as summing its lines.
SELECT
    model,
    currency,
    sum(tokens) AS cached_tokens,
    sum(cached) AS cached_cost,
    cached_cost + sum(savings) AS uncached_cost,
    sum(write_tokens) AS cache_write_tokens,
    sum(writes) AS cache_write_cost,
    cache_write_cost - sum(writes_as_input) AS cache_write_premium,
    uncached_cost - cached_cost - cache_write_premium AS net_savings
FROM
(
    SELECT
        model,
        currency,
        sumIf(quantity, meter = 'cached_input_tokens') AS tokens,
        sumIf(amount, meter = 'cached_input_tokens') AS cached,
        sumIf(cache_savings, meter = 'cached_input_tokens') AS savings,
        sumIf(quantity, meter = 'cache_write_tokens') AS write_tokens,
        sumIf(amount, meter = 'cache_write_tokens') AS writes,
        sumIf(input_list_cost, meter = 'cache_write_tokens') AS writes_as_input
    FROM cost_hourly
    WHERE tenant = {tenant:String}
      AND hour >= {start:DateTime('UTC')}
      AND hour <= {end:DateTime('UTC')} - INTERVAL 1 HOUR
      AND line_kind = 'usage'
      AND meter IN ('cached_input_tokens', 'cache_write_tokens')
    GROUP BY model, currency
    UNION ALL
    SELECT
        model,
        currency,
        sumIf(quantity, meter = 'cached_input_tokens'),
        sumIf(amount, meter = 'cached_input_tokens'),
        sumIf(cache_savings, meter = 'cached_input_tokens'),
        sumIf(quantity, meter = 'cache_write_tokens'),
        sumIf(amount, meter = 'cache_write_tokens'),
        sumIf(input_list_cost, meter = 'cache_write_tokens')
    FROM cost_minutely
    WHERE tenant = {tenant:String}
      AND minute >= {start:DateTime('UTC')}
      AND minute <= {end:DateTime('UTC')} - INTERVAL 1 MINUTE
      AND (toStartOfHour(minute) < {start:DateTime('UTC')}
           OR toStartOfHour(minute) > {end:DateTime('UTC')} - INTERVAL 1 HOUR)
      AND line_kind = 'usage'
      AND meter IN ('cached_input_tokens', 'cache_write_tokens')
    GROUP BY model, currency
    UNION ALL
    SELECT
        model,
        currency,
        sumIf(quantity, meter = 'cached_input_tokens'),
        sumIf(amount, meter = 'cached_input_tokens'),
        sumIf(cache_savings, meter = 'cached_input_tokens'),
        sumIf(quantity, meter = 'cache_write_tokens'),
        sumIf(amount, meter = 'cache_write_tokens'),
        sumIf(input_list_cost, meter = 'cache_write_tokens')
    FROM
    (
        -- the partial minutes: [start, start rounded up to a minute) and
        -- [end rounded down to a minute, end), both empty on whole minutes
        SELECT line_id, meter, any(model) AS model, any(currency) AS currency,
               any(quantity) AS quantity, any(amount) AS amount,
               any(cache_savings) AS cache_savings, any(input_list_cost) AS input_list_cost
        FROM priced_lines
        WHERE tenant = {tenant:String}
          AND event_time >= {start:DateTime('UTC')}
          AND event_time < {end:DateTime('UTC')}
          AND (event_time < toStartOfMinute({start:DateTime('UTC')} - INTERVAL 1 SECOND)
                            + INTERVAL 1 MINUTE
               OR event_time >= toStartOfMinute({end:DateTime('UTC')}))
          AND line_kind = 'usage'
          AND meter IN ('cached_input_tokens', 'cache_write_tokens')
        GROUP BY line_id, meter
    )
    GROUP BY model, currency
)
GROUP BY model, currency
HAVING cached_tokens > 0 OR cache_write_tokens > 0
ORDER BY net_savings DESC, model, currency
