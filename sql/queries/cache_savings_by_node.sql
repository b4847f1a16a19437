-- What prompt caching saved one tenant in [start, end), per workflow node and model:
-- cache_savings split by node, with the same columns and rules (cache reads at the
-- input price minus their cost, less the cache-write premium = write cost minus the same
-- tokens at the input price, migrations 030 and 075). Its rows add up to cache_savings.
-- Reads only the period, as cache_savings: whole hours from cost_hourly, the whole minutes
-- of the partial hours at its edges from cost_minutely (090), the lines of a partial
-- minute from priced_lines, one copy per line_id (none for a period on whole minutes).
SELECT
    workflow,
    node_id,
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
        workflow,
        node_id,
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
    GROUP BY workflow, node_id, model, currency
    UNION ALL
    SELECT
        workflow,
        node_id,
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
    GROUP BY workflow, node_id, model, currency
    UNION ALL
    SELECT
        workflow,
        node_id,
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
        SELECT line_id, meter, any(workflow) AS workflow, any(node_id) AS node_id,
               any(model) AS model, any(currency) AS currency,
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
    GROUP BY workflow, node_id, model, currency
)
GROUP BY workflow, node_id, model, currency
HAVING cached_tokens > 0 OR cache_write_tokens > 0
ORDER BY net_savings DESC, workflow, node_id, model, currency
