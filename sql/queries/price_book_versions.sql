-- The price book versions a tenant's usage was priced with in [start, end): for each
-- (book, version), when it took effect, its currency and number of rates (from
-- price_book_rates FINAL, migration 004), and the lines and amount priced under it.
-- A version that priced nothing in the period is not listed.
-- Reads only the period: the hours wholly inside it from cost_hourly (051, which keeps
-- book, version and first/last event per hour), the partial hours at its edges from
-- priced_lines FINAL (none for a period on whole hours).
WITH
    priced AS
    (
        SELECT price_book, version, currency, sum(n) AS lines, sum(amt) AS amount,
               min(first_at) AS first_event, max(last_at) AS last_event
        FROM
        (
            SELECT price_book, price_book_version AS version, currency,
                   sum(lines) AS n, sum(amount) AS amt,
                   min(first_event) AS first_at, max(last_event) AS last_at
            FROM cost_hourly
            WHERE tenant = {tenant:String}
              AND hour >= {start:DateTime('UTC')}
              AND hour <= {end:DateTime('UTC')} - INTERVAL 1 HOUR
            GROUP BY price_book, version, currency
            UNION ALL
            SELECT price_book, price_book_version AS version, currency,
                   toUInt64(count()), sum(amount), min(event_time), max(event_time)
            FROM priced_lines FINAL
            WHERE tenant = {tenant:String}
              AND event_time >= {start:DateTime('UTC')}
              AND event_time < {end:DateTime('UTC')}
              AND (toStartOfHour(event_time) < {start:DateTime('UTC')}
                   OR toStartOfHour(event_time) > {end:DateTime('UTC')} - INTERVAL 1 HOUR)
            GROUP BY price_book, version, currency
        )
        GROUP BY price_book, version, currency
    ),
    books AS
    (
        SELECT price_book, version, min(effective_from) AS effective_from,
               toUInt64(count()) AS rates
        FROM price_book_rates FINAL
        GROUP BY price_book, version
    )
SELECT
    p.price_book AS price_book,
    p.version AS version,
    b.effective_from AS effective_from,
    p.currency AS currency,
    b.rates AS rates,
    p.lines AS lines,
    p.amount AS amount,
    p.first_event AS first_event,
    p.last_event AS last_event
FROM priced AS p
LEFT JOIN books AS b ON b.price_book = p.price_book AND b.version = p.version
ORDER BY price_book, version, currency
