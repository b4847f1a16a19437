-- What prompt caching saved one tenant in [start, end), per model.
-- cached_cost: what cache reads (meter cached_input_tokens) were charged.
-- uncached_cost: what the same tokens would have cost at the model's input_tokens list
--   price = cached_cost + priced_lines.cache_savings (set by the pricing worker from the
--   same price book version, migration 030).
-- cache_write_cost: what writing the cache cost (meter cache_write_tokens).
-- net_savings = uncached_cost - cached_cost - cache_write_cost (negative: the cache
--   cost more than it saved). Reads priced_lines FINAL: exact before merges.
SELECT
    model,
    currency,
    sumIf(quantity, meter = 'cached_input_tokens') AS cached_tokens,
    sumIf(amount, meter = 'cached_input_tokens') AS cached_cost,
    cached_cost + sumIf(cache_savings, meter = 'cached_input_tokens') AS uncached_cost,
    sumIf(amount, meter = 'cache_write_tokens') AS cache_write_cost,
    uncached_cost - cached_cost - cache_write_cost AS net_savings
FROM priced_lines FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime('UTC')}
  AND event_time < {end:DateTime('UTC')}
  AND line_kind = 'usage'
  AND meter IN ('cached_input_tokens', 'cache_write_tokens')
GROUP BY model, currency
HAVING cached_tokens > 0 OR cache_write_cost != 0
ORDER BY net_savings DESC, model, currency
