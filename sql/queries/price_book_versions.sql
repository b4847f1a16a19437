-- The price book versions a tenant's usage was priced with in [start, end): for each
-- (book, version), when it took effect, its currency and number of rates (from
-- price_book_rates FINAL, migration 004), and the lines and amount priced under it.
-- A version that priced nothing in the period is not listed.
-- Reads only the period: the hours wholly inside it from cost_hourly (051, which keeps
-- book, version and first/last event per hour), the whole minutes of the partial hours at
-- its edges from cost_minutely (090, the same by minute), and the lines of a partial
-- minute from priced_lines, one copy per line_id (copies of a line are identical:
-- pricing is deterministic); none for a period on whole minutes.
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
                   sum(lines), sum(amount), min(first_event), max(last_event)
            FROM cost_minutely
            WHERE tenant = {tenant:String}
              AND minute >= {start:DateTime('UTC')}
              AND minute <= {end:DateTime('UTC')} - INTERVAL 1 MINUTE
              AND (toStartOfHour(minute) < {start:DateTime('UTC')}
                   OR toStartOfHour(minute) > {end:DateTime('UTC')} - INTERVAL 1 HOUR)
            GROUP BY price_book, version, currency
            UNION ALL
            SELECT price_book, version, currency,
                   toUInt64(count()), sum(amount), min(at), max(at)
            FROM
            (
                -- the partial minutes: [start, start rounded up to a minute) and
                -- [end rounded down to a minute, end), both empty on whole minutes
                SELECT line_id, any(price_book) AS price_book,
                       any(price_book_version) AS version, any(currency) AS currency,
                       any(amount) AS amount, any(event_time) AS at
                FROM priced_lines
                WHERE tenant = {tenant:String}
                  AND event_time >= {start:DateTime('UTC')}
                  AND event_time < {end:DateTime('UTC')}
                  AND (event_time < toStartOfMinute({start:DateTime('UTC')} - INTERVAL 1 SECOND)
                                    + INTERVAL 1 MINUTE
                       OR event_time >= toStartOfMinute({end:DateTime('UTC')}))
                GROUP BY line_id
            )
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
