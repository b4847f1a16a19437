-- What prompt caching saved one tenant in [start, end), per model.
-- cached_cost: what cache reads (meter cached_input_tokens) were charged.
-- uncached_cost: the same tokens at the input_tokens unit price of the same model,
--   price book and version (the lowest tier's price: the list price).
-- cache_write_cost: what writing the cache cost (meter cache_write_tokens).
-- net_savings = uncached_cost - cached_cost - cache_write_cost (negative: the cache
--   cost more than it saved). Reads priced_lines FINAL: exact before merges.
WITH
    lines AS
    (
        SELECT model, price_book, price_book_version, currency, meter, tier, quantity, unit_price, amount
        FROM priced_lines FINAL
        WHERE tenant = {tenant:String}
          AND event_time >= {start:DateTime('UTC')}
          AND event_time < {end:DateTime('UTC')}
          AND line_kind = 'usage'
          AND meter IN ('input_tokens', 'cached_input_tokens', 'cache_write_tokens')
    ),
    input_price AS
    (
        SELECT model, price_book, price_book_version, currency,
               argMin(unit_price, tier) AS input_unit_price
        FROM lines
        WHERE meter = 'input_tokens'
        GROUP BY model, price_book, price_book_version, currency
    ),
    per_book AS
    (
        SELECT l.model AS model, l.currency AS currency,
               sumIf(l.quantity, l.meter = 'cached_input_tokens') AS cached_tokens,
               sumIf(l.amount, l.meter = 'cached_input_tokens') AS cached_cost,
               sumIf(l.quantity * p.input_unit_price, l.meter = 'cached_input_tokens') AS uncached_cost,
               sumIf(l.amount, l.meter = 'cache_write_tokens') AS cache_write_cost
        FROM lines AS l
        LEFT JOIN input_price AS p
            ON l.model = p.model AND l.price_book = p.price_book
           AND l.price_book_version = p.price_book_version AND l.currency = p.currency
        GROUP BY l.model, l.currency
    )
SELECT
    model,
    currency,
    cached_tokens,
    cached_cost,
    uncached_cost,
    cache_write_cost,
    uncached_cost - cached_cost - cache_write_cost AS net_savings
FROM per_book
WHERE cached_tokens > 0 OR cache_write_cost != 0
ORDER BY net_savings DESC, model, currency
